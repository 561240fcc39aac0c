"""The engine's output played by hls.js, Shaka Player and dash.js in headless Chromium.

One short source (8 s, 320x180, English and French audio, an English subtitle track) is made into each
variant once per module: clear, AES-128 (MPEG-TS, HLS only), cenc and cbcs. Every player that reads the
manifest plays it past 5 s, seeks and plays on, without a player error, offering every audio language
(each selected in turn) and listing every text track: hls.js and Shaka Player every HLS output, Shaka
Player and dash.js every DASH output. AES-128 keys are fetched by the players from the key URI the
playlists name (this module's server standing in for the client's key server).

Chromium has the ClearKey CDM only: cenc and cbcs are played with ClearKey; Widevine, PlayReady and
FairPlay signalling is checked by reading the boxes and manifests and by decrypting with the key
(tests/media/test_vodstream.py).

hls.js once stopped on the cbcs HLS output with "fragParsingError" ("The MP4 demuxer does not support
SAMPLE-AES decryption"). The cause was the packager's ``KEYFORMAT="identity"`` key tag for ClearKey
under cbcs (its URI is the key id): hls.js prefers an identity key to every other (``Fragment.decryptdata``
in hls.js 1.7.4, src/loader/fragment.ts), loads its URI as an AES key and sends the fMP4 down the
MPEG-TS SAMPLE-AES path (src/demux/transmuxer.ts, src/demux/mp4demuxer.ts ``demuxSampleAes``), which
hls.js never had for fMP4 (https://github.com/video-dev/hls.js/issues/1491). That the packager puts the
key id where the identity format wants the key is
https://github.com/shaka-project/shaka-packager/issues/1219. The engine removes the tag
(media/packaging.py) and hls.js plays cbcs with ClearKey through EME like Shaka Player and dash.js.
"""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from media.ffmpeg import ffmpeg_exe
from media.selectors import job_key_documents
from tests.media.conftest import run_workflow

SECONDS = 8
POLL = 0.25


def source(folder: Path) -> Path:
    srt = folder / "en.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:04,000\nHello\n\n2\n00:00:04,500 --> 00:00:07,500\nWorld\n")
    path = folder / "languages.mp4"
    command = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=320x180:rate=25:duration={SECONDS}",
    ]
    command += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}"]
    command += [
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=660:sample_rate=48000:duration={SECONDS}",
        "-i",
        str(srt),
    ]
    command += [
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-map",
        "3:s",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
    ]
    command += ["-g", "25", "-c:a", "aac", "-c:s", "mov_text", "-metadata:s:a:0", "language=eng"]
    command += ["-metadata:s:a:1", "language=fra", "-metadata:s:s:0", "language=eng", str(path)]
    subprocess.run(command, check=True)
    return path


@pytest.fixture(scope="module")
def outputs(site, tmp_path_factory, django_db_setup, django_db_blocker):
    """Each variant's output folder under the site, and its ClearKey key (hex) when encrypted."""
    from django.utils import timezone

    from clients.models import Client
    from jobs.models import Job

    made: dict[str, tuple[str, dict[str, str] | None]] = {}
    storage = site.root / "storage"
    area = storage / "players"
    area.mkdir(parents=True)
    src = source(tmp_path_factory.mktemp("src"))
    (area / "in").mkdir()
    (area / "in/source.mp4").write_bytes(src.read_bytes())
    variants = {
        "clear": ["clear"],
        "aes": ["aes"],
        "cenc": ["cenc", "widevine", "playready"],
        "cbcs": ["clearkey", "widevine"],
    }
    with django_db_blocker.unblock():
        client, _ = Client.objects.get_or_create(name="players")
        for name, drm in variants.items():
            job = Job.objects.create(
                client=client, workflow="vodstream", run_at=timezone.now(), parameters={}
            )
            parameters = {
                "content_id": "show", "source_folder": "in", "output_folder": name, "drm": drm,
                "segment_duration": 2, "video_preset": "ultrafast", "renditions": 2,
            }  # fmt: skip
            if name == "cbcs":
                parameters["encryption_scheme"] = "cbcs"
            if name == "aes":
                # The client's key server for AES-128: the players fetch the key from the URI the
                # playlists name, as they would from the client's (authorising) key server.
                parameters["key_uri"] = f"{site.url}/keys/{name}.key"
            run_workflow("vodstream", parameters, area, job_id=job.pk)
            documents = job_key_documents(job_id=job.pk)
            if name == "aes":
                (site.root / "keys").mkdir(exist_ok=True)
                (site.root / "keys" / f"{name}.key").write_bytes(bytes.fromhex(documents[0]["key_hex"]))
            clearkey = documents and name != "aes"
            made[name] = (
                f"storage/players/{name}",
                {"kid": documents[0]["kid_hex"], "key": documents[0]["key_hex"]} if clearkey else None,
            )
            job.delete()
    return made


def wait_for(browser: Any, script: str, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = browser.execute_script(script)
        errors = browser.execute_script("return window.report && window.report.errors")
        assert not errors, f"player error while waiting for {what}: {errors}"
        if value:
            return value
        time.sleep(POLL)
    pytest.fail(f"{what} did not happen; report: {browser.execute_script('return window.report')}")


CASES = [
    ("hlsjs", "clear", "show.m3u8"),
    ("shaka", "clear", "show.m3u8"),
    ("shaka", "clear", "show.mpd"),
    ("dashjs", "clear", "show.mpd"),
    # AES-128 is HLS over MPEG-TS only (no DASH): the players transmux it and fetch the key themselves.
    ("hlsjs", "aes", "show.m3u8"),
    ("shaka", "aes", "show.m3u8"),
    ("hlsjs", "cenc", "show.m3u8"),
    ("shaka", "cenc", "show.m3u8"),
    ("shaka", "cenc", "show.mpd"),
    ("dashjs", "cenc", "show.mpd"),
    ("hlsjs", "cbcs", "show.m3u8"),
    ("shaka", "cbcs", "show.m3u8"),
    ("shaka", "cbcs", "show.mpd"),
    ("dashjs", "cbcs", "show.mpd"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("player", "variant", "manifest"), CASES)
def test_a_real_player_plays_seeks_and_offers_every_track(player, variant, manifest, outputs, site, browser):
    folder, key = outputs[variant]
    query = {"player": player, "src": f"{site.url}/{folder}/{manifest}"}
    if key:
        # Each variant's key, served by the license endpoint for hls.js, handed to Shaka and dash.js.
        site.license = {
            "keys": [{"kty": "oct", "kid": _b64(key["kid"]), "k": _b64(key["key"])}],
            "type": "temporary",
        }
        query |= {"kid": key["kid"], "key": key["key"], "license": f"{site.url}/license"}
    browser.get(f"{site.url}/player.html?{urlencode(query)}")
    wait_for(browser, "return window.report.ready", "the manifest to load")
    browser.execute_script("document.getElementById('v').play()")
    tracks = wait_for(
        browser, "const t = window.tracks(); return t.audio.length > 1 && t.text.length && t", "tracks"
    )
    assert sorted(tracks["audio"]) == ["en", "fr"]
    assert tracks["text"] == ["en"]
    wait_for(browser, "return document.getElementById('v').currentTime > 5", "playback past 5 s")
    browser.execute_script("document.getElementById('v').currentTime = 1.0")
    wait_for(
        browser,
        "const v = document.getElementById('v'); "
        "return !v.seeking && v.currentTime > 2.0 && v.currentTime < 5",
        "playing on after a seek",
    )
    for index, language in enumerate(tracks["audio"]):
        assert browser.execute_script(f"return window.selectAudio({index})") == language
    assert browser.execute_script("return window.report.errors") == []


def _b64(hex_text: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_text)).rstrip(b"=").decode()
