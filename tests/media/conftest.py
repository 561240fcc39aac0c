"""Fixtures for the media tests: synthetic sources made by ffmpeg (no downloads), a real StepContext,
and a runner that calls a workflow's steps in order the way the engine does (results of earlier steps
passed to later ones), without a database."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jobs.workflows.registry import StepContext, get_step, load_steps
from media.definitions import MEDIA_DEFINITIONS
from media.ffmpeg import ffmpeg_exe

# The callback receiver, for the signed job callbacks that carry content keys.
from tests.callbacks.support import allow_loopback, receiver  # noqa: F401

# The engine tests' in-process broker and submission fixtures, for the engine-level media test.
from tests.engine.conftest import broker, committed, submit, te_client  # noqa: F401

FPS = 25


def make_media(
    path: Path,
    *,
    seconds: float,
    size: str = "640x360",
    audio: bool = True,
    gop: int = FPS,
    extra: tuple = (),
) -> Path:
    """A synthetic H.264/AAC MP4 (testsrc2 + a sine tone) with a keyframe every ``gop`` frames."""
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    command += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}:duration={seconds}"]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-threads", "1", "-pix_fmt", "yuv420p"]
    command += ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    if audio:
        command += ["-c:a", "aac", "-b:a", "64k"]
    command += [*extra, str(path)]
    subprocess.run(command, check=True)
    return path


@pytest.fixture(scope="session")
def media_cache(tmp_path_factory) -> Callable[..., Path]:
    """Make each distinct synthetic source once per test session."""
    folder = tmp_path_factory.mktemp("media-cache")
    made: dict[tuple, Path] = {}

    def get(seconds: float = 4, size: str = "640x360", audio: bool = True, suffix: str = ".mp4") -> Path:
        key = (seconds, size, audio, suffix)
        if key not in made:
            name = f"src_{seconds}_{size}_{int(audio)}{suffix}"
            made[key] = make_media(folder / name, seconds=seconds, size=size, audio=audio)
        return made[key]

    return get


@pytest.fixture(autouse=True)
def media_env(settings, tmp_path):
    """One encoder thread (the machine is shared) and a work directory per test."""
    settings.TASKENGINE_FFMPEG_THREADS = 1
    settings.TASKENGINE_WORK_DIR = tmp_path / "work"


CLIENT = "media-tests"


@pytest.fixture
def area(tmp_path) -> Path:
    """The storage area of the client ``CLIENT`` whose jobs these tests run (``<root>/<client>``)."""
    root = tmp_path / "storage" / CLIENT
    root.mkdir(parents=True)
    return root


class Recorder:
    """Collects what a step reports: log lines and heartbeat progress values."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.progress: list[float] = []
        self.beats = 0

    def log(self, message: str, severity: int = 1) -> None:
        self.lines.append(message)

    def heartbeat(self, progress: float | None = None) -> None:
        self.beats += 1
        if progress is not None:
            self.progress.append(progress)


_job_ids = iter(range(1, 1_000_000))


def make_ctx(
    workflow: str,
    parameters: dict[str, Any],
    area: Path,
    *,
    step_parameters: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    recorder: Recorder | None = None,
    job_id: int | None = None,
) -> StepContext:
    recorder = recorder or Recorder()
    return StepContext(
        job_id=job_id or next(_job_ids),
        task_id=1,
        client_name=area.name,
        workflow=workflow,
        job_parameters=parameters,
        step_parameters=step_parameters or {},
        results=results if results is not None else {},
        log=recorder.log,
        heartbeat=recorder.heartbeat,
        storage_root=area.parent,
    )


def run_workflow(
    workflow: str,
    parameters: dict[str, Any],
    area: Path,
    recorder: Recorder | None = None,
    *,
    job_id: int | None = None,
) -> dict[str, Any]:
    """Run every step of the common definition in order; the results by step name.

    ``job_id`` is a real job's (``area_job``) when a step keeps rows of its own (content keys)."""
    load_steps()
    job_id = job_id or next(_job_ids)
    results: dict[str, Any] = {}
    for item in MEDIA_DEFINITIONS[workflow]:
        ctx = make_ctx(
            workflow,
            parameters,
            area,
            step_parameters=item.get("parameters"),
            results=dict(results),
            recorder=recorder,
            job_id=job_id,
        )
        results[item["step"]] = get_step(item["step"]).fn(ctx)
    return results


@pytest.fixture
def area_job(make_client):
    """``area_job(area, parameters, workflow="vodstream") -> Job``: a job row of the client that owns
    ``area``, for the steps that keep rows of their own (``prepare_encryption``'s content key)."""
    from clients.models import Client
    from jobs.models import Job
    from tests import factories

    def factory(area: Path, parameters: dict[str, Any], workflow: str = "vodstream") -> Job:
        client = Client.objects.filter(name=area.name).first() or make_client(area.name)[0]
        return factories.job(client, workflow=workflow, parameters=parameters)

    return factory


def with_local_key(folder: Path, key_uri: str, key: bytes, target: Path) -> Path:
    """A copy of a published AES-128 HLS ``folder`` in ``target`` whose playlists name a local copy of
    ``key`` instead of the client's ``key_uri``: what a player gets from the client's key server."""
    shutil.copytree(folder, target)
    (target / "local.key").write_bytes(key)
    for playlist in target.rglob("*.m3u8"):
        text = playlist.read_text()
        playlist.write_text(text.replace(f'URI="{key_uri}"', 'URI="local.key"'))
    return target


def put(area: Path, source: Path, key: str) -> Path:
    target = area / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def decode(path: Path | str, **options: str) -> dict[str, Any]:
    """Decode every stream of ``path`` start to end with PyAV.

    Returns the video streams' frame counts, first/last frame times and sizes, and the audio seconds
    decoded; any undecodable packet raises.
    """
    import av

    video: dict[int, dict[str, Any]] = {}
    audio_seconds: dict[int, float] = {}
    with av.open(str(path), options=options) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        for packet in container.demux(*streams):
            index = packet.stream.index
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    entry = video.setdefault(
                        index,
                        {
                            "frames": 0,
                            "first": frame.time,
                            "last": frame.time,
                            "size": (frame.width, frame.height),
                        },
                    )
                    entry["frames"] += 1
                    entry["last"] = frame.time
                elif isinstance(frame, av.AudioFrame):
                    audio_seconds[index] = audio_seconds.get(index, 0.0) + frame.samples / frame.sample_rate
    return {
        "video": [video[i] for i in sorted(video)],
        "audio": [audio_seconds[i] for i in sorted(audio_seconds)],
    }


class _Handler(SimpleHTTPRequestHandler):
    """Serves the fixture's folder; records each path asked for; fails the first N requests on demand."""

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        server = self.server
        server.requests.append(self.path)  # type: ignore[attr-defined]
        if server.failures > 0:  # type: ignore[attr-defined]
            server.failures -= 1  # type: ignore[attr-defined]
            self.send_error(503)
            return
        super().do_GET()


@pytest.fixture
def http_server(tmp_path, settings):
    """A real HTTP server on 127.0.0.1 serving ``server.root``; private URLs allowed for it."""
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True
    root = tmp_path / "http"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.requests = []
    server.failures = 0
    server.root = root
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
