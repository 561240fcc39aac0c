"""Keys from a CPIX key server: a real HTTP server in the suite answers DASH-IF CPIX documents; the
engine asks it through the outbound guard, uses its key and its systems' PSSH boxes, and keeps the key
a secret like every content key."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from defusedxml import ElementTree

from media import cpix
from media.selectors import job_key_documents
from tests.media import streams
from tests.media.conftest import Recorder, decode, put, run_workflow

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
WIDEVINE = "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"


def widevine_pssh(kid: bytes) -> bytes:
    """A version 0 Widevine pssh whose data is the key server's own (here: a marker and the key id)."""
    data = b"\x12\x10" + kid + b"\x48\xe3\xdc\x95\x9b\x06" + b"CPIXTEST"
    body = b"\x00\x00\x00\x00" + uuid.UUID(WIDEVINE).bytes + len(data).to_bytes(4, "big") + data
    return (8 + len(body)).to_bytes(4, "big") + b"pssh" + body


class KeyServer(BaseHTTPRequestHandler):
    """Answers a CPIX request with the key in the clear and a PSSH per system asked for."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(body)  # type: ignore[attr-defined]
        root = ElementTree.fromstring(body)
        kid = root.find(f".//{{{cpix.CPIX}}}ContentKey").get("kid")
        systems = [e.get("systemId") for e in root.iter(f"{{{cpix.CPIX}}}DRMSystem")]
        key = base64.b64encode(KEY).decode()
        pssh = base64.b64encode(widevine_pssh(uuid.UUID(kid).bytes)).decode()
        drm = "".join(
            f'<cpix:DRMSystem kid="{kid}" systemId="{system}">'
            + (f"<cpix:PSSH>{pssh}</cpix:PSSH>" if system == WIDEVINE else "")
            + "</cpix:DRMSystem>"
            for system in systems
        )
        answer = (
            f'<?xml version="1.0"?><cpix:CPIX xmlns:cpix="{cpix.CPIX}" xmlns:pskc="{cpix.PSKC}">'
            f'<cpix:ContentKeyList><cpix:ContentKey kid="{kid}"><cpix:Data><pskc:Secret><pskc:PlainValue>'
            f"{key}</pskc:PlainValue></pskc:Secret></cpix:Data></cpix:ContentKey></cpix:ContentKeyList>"
            f"<cpix:DRMSystemList>{drm}</cpix:DRMSystemList></cpix:CPIX>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def key_server(settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = True  # the server listens on 127.0.0.1
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeyServer)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/cpix"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_the_key_and_pssh_come_from_the_cpix_key_server(area, media_cache, area_job, key_server):
    server, url = key_server
    put(area, media_cache(2, size="320x180"), "in/source.mp4")
    job = area_job(area, {"content_id": "show"})
    parameters = {
        "content_id": "show",
        "source_folder": "in",
        "output_folder": "vod",
        "drm": ["widevine", "clearkey"],
        "key_server_url": url,
        "segment_duration": 1,
        "video_preset": "ultrafast",
    }
    recorder = Recorder()
    results = run_workflow("vodstream", parameters, area, recorder, job_id=job.pk)
    (document,) = job_key_documents(job_id=job.pk)
    assert (document["key_hex"], document["origin"]) == (KEY.hex(), "cpix")
    # The request named the content, the key id the engine chose and both systems.
    (request,) = server.requests
    root = ElementTree.fromstring(request)
    assert root.get("contentId") == "show"
    assert root.find(f".//{{{cpix.CPIX}}}ContentKey").get("kid") == str(uuid.UUID(document["kid_hex"]))
    assert {e.get("systemId") for e in root.iter(f"{{{cpix.CPIX}}}DRMSystem")} == {
        WIDEVINE,
        cpix.SYSTEM_IDS["clearkey"],
    }
    # The server's own Widevine pssh is in the init segments, beside the packager's ClearKey one.
    init = area / "vod/show_video_144p/init.mp4"
    widevine = [b for b in streams.boxes(init, b"pssh") if str(b.system_ID) == WIDEVINE]
    assert len(widevine) == 1 and widevine[0].init_data.endswith(b"CPIXTEST")
    assert streams.pssh_systems(init) == {"widevine", "clearkey"}
    # The key decrypts the output, and is nowhere but the database.
    decoded = decode(streams.joined(area / "vod", "show_video_144p.m3u8"), decryption_key=KEY.hex())
    assert decoded["video"][0]["frames"] == 50
    assert KEY.hex() not in json.dumps(results) + "\n".join(recorder.lines)
    assert not [p for p in area.rglob("*") if p.is_file() and KEY in p.read_bytes()]


def test_a_key_server_answer_is_checked():
    kid = "00" * 16
    with pytest.raises(cpix.CpixError, match="not XML"):
        cpix.parse_response(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", kid, ("widevine",))
    with pytest.raises(cpix.CpixError, match="no ContentKey for the key id"):
        cpix.parse_response(f'<cpix:CPIX xmlns:cpix="{cpix.CPIX}"/>'.encode(), kid, ("widevine",))
    encrypted = (
        f'<cpix:CPIX xmlns:cpix="{cpix.CPIX}" xmlns:pskc="{cpix.PSKC}">'
        f'<cpix:ContentKey kid="{uuid.UUID(kid)}">'
        "<cpix:Data><pskc:Secret><pskc:EncryptedValue/></pskc:Secret></cpix:Data></cpix:ContentKey></cpix:CPIX>"
    ).encode()
    with pytest.raises(cpix.CpixError, match="only keys in the clear"):
        cpix.parse_response(encrypted, kid, ("widevine",))
