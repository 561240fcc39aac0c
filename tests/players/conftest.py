"""Real players for the media output: hls.js, Shaka Player and dash.js, pinned in this folder's
package-lock.json and installed with ``npm ci`` from the npm registry (Node.js and npm from Debian's
packages when missing), run in headless Chromium (``tests/browser``'s fixture). Nothing comes from a CDN:
one local HTTP server serves the players' files, the page, the media and a ClearKey license."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import _apt, browser, chromium_installed  # noqa: F401

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def players_installed() -> Path:
    """``node_modules`` from the lock file (``npm ci``), installing Node.js and npm if missing."""
    if shutil.which("npm") is None:
        _apt("update")
        _apt("install", "-y", "--no-install-recommends", "nodejs", "npm")
    marker = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if not marker.is_file() or marker.stat().st_mtime < lock.stat().st_mtime:
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}", pytrace=False)
    return HERE / "node_modules"


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def do_POST(self) -> None:
        # The ClearKey license: the W3C JSON the client's key server would answer an authorised player.
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(self.server.license).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def site(tmp_path_factory, players_installed):
    """An HTTP server on 127.0.0.1 serving ``site.root`` (page, players, media) and the license."""
    root = tmp_path_factory.mktemp("site")
    (root / "lib").symlink_to(players_installed)
    shutil.copyfile(HERE / "player.html", root / "player.html")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.license = {}
    server.root = root
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
