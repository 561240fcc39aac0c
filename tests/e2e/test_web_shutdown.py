"""End to end: gunicorn, started as the Procfile starts it, finishes a request in flight when it gets
SIGTERM, and two instances on one host do not share a control socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from clients.models import Client
from tests.e2e.conftest import BASE_DIR, database_url, wait_until

pytestmark = pytest.mark.e2e


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Web:
    def __init__(self, tmp_path: Path, grace: int) -> None:
        self.port = free_port()
        self.log_path = tmp_path / f"web-{self.port}.log"
        env = dict(
            os.environ,
            DATABASE_URL=database_url(),
            TASKENGINE_SHUTDOWN_GRACE_SECONDS=str(grace),
            HOME=str(tmp_path),  # where gunicorn would put its control socket by default
        )
        env.pop("XDG_RUNTIME_DIR", None)
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:taskengine_site.gunicorn_config",
                "taskengine_site.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
                "--threads",
                "2",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self.up, timeout=60, interval=0.2, what="gunicorn to answer")

    def up(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(self.log_path.read_text())
        try:
            return requests.get(self.url("/"), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


@pytest.fixture
def start_web(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., Web]]:
    webs: list[Web] = []

    def start(grace: int = 10) -> Web:
        web = Web(tmp_path, grace)
        webs.append(web)
        return web

    yield start
    for web in webs:
        web.stop()


def test_a_request_in_flight_is_answered_after_sigterm(
    start_web: Callable[..., Web], make_client: Callable[..., tuple[Client, str]], tmp_path: Path
) -> None:
    client, key = make_client()
    web = start_web(grace=10)
    answers: list[Any] = []
    # The request waits on a lock this test holds (every key lookup reads the key table), so it is in
    # flight when gunicorn is told to stop.
    with psycopg.connect(database_url()) as blocker:
        blocker.execute("LOCK TABLE clients_apikey IN ACCESS EXCLUSIVE MODE")

        def ask() -> None:
            try:
                answers.append(
                    requests.get(
                        web.url("/jobs"), headers={"client": client.name, "api-key": key}, timeout=30
                    )
                )
            except requests.RequestException as exc:
                answers.append(exc)

        thread = threading.Thread(target=ask)
        thread.start()
        time.sleep(1.0)
        web.popen.send_signal(signal.SIGTERM)
        time.sleep(2.0)
        assert web.popen.poll() is None, "gunicorn did not wait for the request in flight"
        blocker.rollback()  # the lock goes; the request goes on
    thread.join(30)
    [answer] = answers
    assert isinstance(answer, requests.Response), answer
    assert answer.status_code == 200, answer.text
    web.popen.wait(10)  # and then gunicorn is gone, without waiting for the rest of its grace
    # No new connection is taken once it stops.
    with pytest.raises(requests.ConnectionError):
        requests.get(web.url("/"), timeout=2)


def test_two_instances_on_one_host_share_no_control_socket(
    start_web: Callable[..., Web], tmp_path: Path
) -> None:
    first, second = start_web(), start_web()
    assert first.up() and second.up()
    assert not (tmp_path / ".gunicorn").exists()
    assert "control" not in first.log_path.read_text().lower()
