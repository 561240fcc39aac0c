"""Hostile HLS playlists: each crafted input is run through every workflow that reads a playlist
(``createmp4`` on a folder holding it, ``vodcapture`` with a clip of it, from storage and over HTTP).
Each ends in a clear refusal naming what was wrong, and no byte of a canary file that lies outside
the client's storage area reaches any file in the area or in the job's work directory."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobs.workflows.registry import PermanentError
from media import hls
from media.ffmpeg import ffmpeg_exe
from media.steps import vod as steps
from tests.media.conftest import make_ctx

ZERO_IV = "0x" + "0" * 32
SEG = "#EXTINF:1.0,\nseg000.ts"


def media(*lines: str) -> str:
    """A media playlist around ``lines``."""
    return "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:1\n" + "\n".join(lines) + "\n#EXT-X-ENDLIST\n"


def master(*variants: str) -> str:
    return "#EXTM3U\n" + "".join(f"#EXT-X-STREAM-INF:BANDWIDTH=1000\n{uri}\n" for uri in variants)


@dataclass(frozen=True)
class Case:
    """Files of one crafted stream (``{canary}`` stands for the canary's absolute path; ``index.m3u8``
    is the entry), the refusal expected from storage, and over HTTP (None: not an HTTP case)."""

    id: str
    files: dict[str, str | bytes]
    storage: str
    http: str | None = "same"
    symlinks: dict[str, str] = field(default_factory=dict)


RELATIVE_ONLY = "only relative paths are allowed"
HTTP_ONLY = r"only http\(s\) URLs are allowed"
NOT_FOUND = "answered HTTP 404"

CASES = [
    # The exploit of the issue: NUL ends a line for ffmpeg, not for Python, inside EXT-X-KEY's IV.
    Case(
        "nul-in-ext-x-key",
        {
            "index.m3u8": media(
                f'#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV={ZERO_IV}\x00#EXT-X-MAP:URI="{{canary}}",'
                'BYTERANGE="4096@0"\x00#EXT-X-KEY:METHOD=NONE',
                SEG,
            ),
            "k.key": b"k" * 16,
        },
        r"control character U\+0000 on line 4",
    ),
    Case(
        "nul-in-method",
        {"index.m3u8": media("#EXT-X-KEY:METHOD=NONE\x00#EXT-X-MAP:URI={canary}", SEG)},
        r"U\+0000",
    ),
    Case("nul-in-segment-uri", {"index.m3u8": media("#EXTINF:1.0,\nseg000.ts\x00{canary}")}, r"U\+0000"),
    Case(
        "cr-inside-a-line",
        {"index.m3u8": media('#EXTINF:1.0,\r#EXT-X-MAP:URI="{canary}"\nseg000.ts')},
        r"control character U\+000D on line 4",
    ),
    Case(
        "lf-inside-key-uri",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=AES-128,URI="k\n{canary}"', SEG)},
        "not a valid HLS playlist",
    ),
    Case("vertical-tab", {"index.m3u8": media("#EXTINF:1.0,\x0b\nseg000.ts")}, r"U\+000B"),
    Case("escape", {"index.m3u8": media("#EXTINF:1.0,\x1b[2J\nseg000.ts")}, r"U\+001B"),
    Case("tab", {"index.m3u8": media("#EXTINF:1.0,\tx\nseg000.ts")}, r"U\+0009"),
    Case("delete", {"index.m3u8": media("#EXTINF:1.0,\x7f\nseg000.ts")}, r"U\+007F"),
    Case(
        "c1-next-line",
        {"index.m3u8": media("#EXTINF:1.0,\x85#EXT-X-MAP:URI={canary}\nseg000.ts")},
        r"U\+0085",
    ),
    Case("line-separator", {"index.m3u8": media("#EXTINF:1.0,\u2028{canary}\nseg000.ts")}, r"U\+2028"),
    Case("not-utf8", {"index.m3u8": media(SEG).encode() + b"\xff\xfe"}, "is not UTF-8"),
    Case("no-extm3u", {"index.m3u8": "#EXTINF:1.0,\nseg000.ts\n"}, r"no #EXTM3U"),
    Case(
        "sample-aes",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=SAMPLE-AES,URI="k.key"', SEG)},
        "METHOD=SAMPLE-AES is not supported",
    ),
    Case(
        "sample-aes-ctr",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,URI="k.key"', SEG)},
        "METHOD=SAMPLE-AES-CTR is not supported",
    ),
    Case(
        "unknown-method",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=AES-256,URI="k.key"', SEG)},
        "METHOD=AES-256 is not supported",
    ),
    Case(
        "other-keyformat",
        {
            "index.m3u8": media(
                '#EXT-X-KEY:METHOD=AES-128,URI="k.key",KEYFORMAT="com.apple.streamingkeydelivery"', SEG
            )
        },
        "KEYFORMAT=com.apple.streamingkeydelivery is not supported",
    ),
    Case(
        "iv-too-short",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV=0x1234', SEG)},
        r"IV '0x1234' is not 0x followed by 32 hex digits",
    ),
    Case(
        "iv-too-long",
        {"index.m3u8": media(f'#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV={ZERO_IV}0', SEG)},
        "is not 0x followed by 32 hex digits",
    ),
    Case(
        "iv-not-hex",
        {"index.m3u8": media(f'#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV=0x{"g" * 32}', SEG)},
        "is not 0x followed by 32 hex digits",
    ),
    Case(
        "iv-without-0x",
        {"index.m3u8": media(f'#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV={"0" * 32}', SEG)},
        "is not 0x followed by 32 hex digits",
    ),
    Case(
        "aes-without-key-uri",
        {"index.m3u8": media("#EXT-X-KEY:METHOD=AES-128", SEG)},
        "an AES-128 EXT-X-KEY has no URI",
    ),
    Case("absolute-segment", {"index.m3u8": media("#EXTINF:1.0,\n{canary}")}, RELATIVE_ONLY, NOT_FOUND),
    Case(
        "file-url-segment", {"index.m3u8": media("#EXTINF:1.0,\nfile://{canary}")}, RELATIVE_ONLY, HTTP_ONLY
    ),
    Case(
        "dotdot-segment",
        {"index.m3u8": media("#EXTINF:1.0,\n../../../outside/canary.ts")},
        "may not contain '..'",
        NOT_FOUND,
    ),
    Case(
        "another-clients-file",
        {"index.m3u8": media("#EXTINF:1.0,\n../../other-client/theirs.ts")},
        "may not contain '..'",
        None,
    ),
    Case("absolute-map", {"index.m3u8": media('#EXT-X-MAP:URI="{canary}"', SEG)}, RELATIVE_ONLY, NOT_FOUND),
    Case(
        "byterange-of-a-local-file",
        {"index.m3u8": media('#EXT-X-MAP:URI="{canary}",BYTERANGE="64@0"', SEG)},
        RELATIVE_ONLY,
        NOT_FOUND,
    ),
    Case(
        "segment-byterange-of-a-local-file",
        {"index.m3u8": media("#EXTINF:1.0,\n#EXT-X-BYTERANGE:64@0\n{canary}")},
        RELATIVE_ONLY,
        NOT_FOUND,
    ),
    Case(
        "absolute-key",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=AES-128,URI="{canary}"', SEG)},
        RELATIVE_ONLY,
        NOT_FOUND,
    ),
    Case(
        "file-url-key",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=AES-128,URI="file://{canary}"', SEG)},
        RELATIVE_ONLY,
        HTTP_ONLY,
    ),
    Case(
        "concat-protocol",
        {"index.m3u8": media("#EXTINF:1.0,\nconcat:seg000.ts|{canary}")},
        RELATIVE_ONLY,
        HTTP_ONLY,
    ),
    Case(
        "subfile-protocol",
        {"index.m3u8": media("#EXTINF:1.0,\nsubfile,,start,0,end,64,,:{canary}")},
        RELATIVE_ONLY,
        NOT_FOUND,
    ),
    Case(
        "data-uri",
        {"index.m3u8": media("#EXTINF:1.0,\ndata:video/mp2t;base64,R0dHRw==")},
        RELATIVE_ONLY,
        HTTP_ONLY,
    ),
    Case(
        "crypto-protocol", {"index.m3u8": media("#EXTINF:1.0,\ncrypto:seg000.ts")}, RELATIVE_ONLY, HTTP_ONLY
    ),
    Case(
        "crypto-file-protocol",
        {"index.m3u8": media("#EXTINF:1.0,\ncrypto+file://{canary}")},
        RELATIVE_ONLY,
        HTTP_ONLY,
    ),
    Case(
        "symlink-to-outside",
        {"index.m3u8": media("#EXTINF:1.0,\nlink.ts")},
        "leads out of the client's storage area",
        "is text, not",
        symlinks={"link.ts": "{canary}"},
    ),
    Case("master-naming-itself", {"index.m3u8": master("index.m3u8")}, "names itself as a variant"),
    Case(
        "master-of-masters",
        {"index.m3u8": master("b.m3u8"), "b.m3u8": master("index.m3u8")},
        "is itself a master playlist",
    ),
    Case(
        "deeply-nested-masters",
        {"index.m3u8": master("m1.m3u8"), **{f"m{i}.m3u8": master(f"m{i + 1}.m3u8") for i in range(1, 10)}},
        "is itself a master playlist",
    ),
    Case(
        "master-with-segments", {"index.m3u8": master("v.m3u8") + SEG + "\n"}, "mixes variants and segments"
    ),
    Case(
        "segment-is-a-playlist",
        {"index.m3u8": media("#EXTINF:1.0,\nevil.ts"), "evil.ts": media("#EXTINF:1.0,\n{canary}")},
        "is an HLS playlist, not MPEG-TS or MP4",
    ),
    Case(
        "segment-is-an-ffconcat-list",
        {"index.m3u8": media("#EXTINF:1.0,\nevil.ts"), "evil.ts": "ffconcat version 1.0\nfile '{canary}'\n"},
        "is an ffconcat list, not",
    ),
    Case(
        "segment-is-a-dash-manifest",
        {
            "index.m3u8": media("#EXTINF:1.0,\nevil.m4s"),
            "evil.m4s": '<?xml version="1.0"?><MPD profiles="dash:profile"/>',
        },
        r"is markup \(XML or HTML\), not",
    ),
    Case(
        "segment-is-text",
        {"index.m3u8": media("#EXTINF:1.0,\nevil.aac"), "evil.aac": "{canary}\n"},
        "is text, not",
    ),
    Case(
        "init-section-is-a-playlist",
        {"index.m3u8": media('#EXT-X-MAP:URI="init.m4s"', SEG), "init.m4s": media("#EXTINF:1.0,\n{canary}")},
        "init section .* is an HLS playlist, not MP4",
    ),
    Case(
        "key-of-5-bytes",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=AES-128,URI="k.key"', SEG), "k.key": b"12345"},
        "is 5 bytes, not 16",
    ),
    Case(
        "key-too-large",
        {"index.m3u8": media('#EXT-X-KEY:METHOD=AES-128,URI="k.key"', SEG), "k.key": b"k" * 99},
        "is larger than 16 bytes",
    ),
    Case("nan-duration", {"index.m3u8": media("#EXTINF:nan,\nseg000.ts")}, "duration nan is out of bounds"),
    Case("infinite-duration", {"index.m3u8": media("#EXTINF:1e999,\nseg000.ts")}, "is out of bounds"),
    Case("negative-duration", {"index.m3u8": media("#EXTINF:-5,\nseg000.ts")}, "is out of bounds"),
    Case(
        "target-duration-not-a-number",
        {"index.m3u8": media("#EXT-X-TARGETDURATION:x", SEG)},
        "is not a valid HLS playlist",
    ),
    Case(
        "media-sequence-of-5000-digits",
        {"index.m3u8": media("#EXT-X-MEDIA-SEQUENCE:" + "9" * 5000, SEG)},
        "is not a valid HLS playlist",
    ),
    Case(
        "segment-without-extinf",
        {"index.m3u8": media("#EXT-X-BYTERANGE:100@0\nseg000.ts")},
        "segment 0 has no #EXTINF duration",
    ),
    Case(
        "byterange-past-the-end",
        {"index.m3u8": media("#EXTINF:1.0,\n#EXT-X-BYTERANGE:99999999@0\nseg000.ts")},
        "is shorter than the byte range 99999999@0",
    ),
    Case(
        "byterange-without-a-start",
        {"index.m3u8": media("#EXTINF:1.0,\n#EXT-X-BYTERANGE:100\nseg000.ts")},
        "follows no other range",
    ),
    Case(
        "a-thousand-and-one-keys",
        {"index.m3u8": media(*(f'#EXT-X-KEY:METHOD=AES-128,URI="k{i}.key"\n{SEG}' for i in range(1001)))},
        "1001 different EXT-X-KEY tags, more than 1000",
    ),
    Case(
        "sixty-thousand-segments", {"index.m3u8": media(*[SEG] * 60_000)}, "60000 segments, more than 50000"
    ),
    Case("five-megabytes", {"index.m3u8": media("#" + "x" * 5_000_000, SEG)}, "is larger than 4194304 bytes"),
]


@pytest.fixture(scope="session")
def segment(tmp_path_factory) -> bytes:
    """One real MPEG-TS segment (a second of testsrc2), for the honest parts of the crafted streams."""
    folder = tmp_path_factory.mktemp("segment")
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    command += ["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25:duration=1", "-c:v", "libx264"]
    command += ["-preset", "ultrafast", "-threads", "1", "-f", "mpegts", str(folder / "seg.ts")]
    subprocess.run(command, check=True)
    return (folder / "seg.ts").read_bytes()


@pytest.fixture
def canary(tmp_path) -> tuple[Path, bytes]:
    """A file outside every storage area, holding a random secret (repeated, so any range of it holds
    the secret or most of it); and the secret."""
    secret = secrets.token_hex(16).encode()
    path = tmp_path / "outside" / "canary.ts"
    path.parent.mkdir()
    path.write_bytes((secret + b"\n") * 20_000)
    return path, secret


def write_case(case: Case, folder: Path, canary: Path, segment: bytes) -> None:
    folder.mkdir(parents=True)
    (folder / "seg000.ts").write_bytes(segment)
    for name, content in case.files.items():
        data = content.replace("{canary}", str(canary)) if isinstance(content, str) else content
        (folder / name).write_bytes(
            data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
        )
    for name, target in case.symlinks.items():
        os.symlink(target.replace("{canary}", str(canary)), folder / name)


def assert_no_canary(secret: bytes, *roots: Path) -> None:
    """Not one file under ``roots`` holds the canary's secret, nor 8 of its bytes in a row."""
    pieces = {secret[i : i + 8] for i in range(0, len(secret) - 7, 4)}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert not any(piece in data for piece in pieces), f"canary bytes in {path}"


def _ids(cases):
    return [case.id for case in cases]


@pytest.mark.parametrize("workflow", ["createmp4", "vodcapture"])
@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_a_hostile_stored_playlist_is_refused_clearly(case, workflow, area, canary, segment, tmp_path):
    canary_path, secret = canary
    other = area.parent / "other-client" / "theirs.ts"
    other.parent.mkdir()
    other.write_bytes((secret + b"\n") * 100)
    write_case(case, area / case.id, canary_path, segment)
    if workflow == "createmp4":
        parameters = {"content_id": "loot", "source_folder": case.id, "output_folder": "out"}
        step = steps.fetch_sources
    else:
        clip = {"source": f"{case.id}/index.m3u8", "start": 0, "end": 1}
        parameters = {"content_id": "loot", "output_folder": "out", "clips": [clip]}
        step = steps.fetch_clips
    started = time.monotonic()
    with pytest.raises(PermanentError, match=case.storage):
        step(make_ctx(workflow, parameters, area))
    assert time.monotonic() - started < 10
    assert_no_canary(secret, area, tmp_path / "work")


HTTP_CASES = [case for case in CASES if case.http is not None]


@pytest.mark.parametrize("case", HTTP_CASES, ids=_ids(HTTP_CASES))
def test_a_hostile_playlist_over_http_is_refused_clearly(case, area, canary, segment, http_server, tmp_path):
    canary_path, secret = canary
    write_case(case, http_server.root / case.id, canary_path, segment)
    clip = {"source": f"{http_server.url}/{case.id}/index.m3u8", "start": 0, "end": 1}
    ctx = make_ctx("vodcapture", {"content_id": "loot", "output_folder": "out", "clips": [clip]}, area)
    with pytest.raises(PermanentError, match=case.storage if case.http == "same" else case.http):
        steps.fetch_clips(ctx)
    assert_no_canary(secret, area, tmp_path / "work")


def test_the_issues_exploit_from_storage_and_over_http(area, canary, segment, http_server, tmp_path):
    """The playlist of the report, with the job run to its end: createmp4 on the folder holding it,
    vodcapture on the same playlist served over HTTP. Both fail on the playlist itself, before any
    segment or ffmpeg: no canary byte anywhere, and no segment asked of the server."""
    from tests.media.conftest import run_workflow

    canary_path, secret = canary
    (case,) = [case for case in CASES if case.id == "nul-in-ext-x-key"]
    write_case(case, area / "evil", canary_path, segment)
    with pytest.raises(PermanentError, match=r"playlist evil/index.m3u8 holds control character U\+0000"):
        run_workflow(
            "createmp4", {"content_id": "loot", "source_folder": "evil", "output_folder": "out"}, area
        )
    write_case(case, http_server.root / "evil", canary_path, segment)
    clip = {"source": f"{http_server.url}/evil/index.m3u8", "start": 0, "end": 1}
    with pytest.raises(PermanentError, match=r"U\+0000"):
        run_workflow("vodcapture", {"content_id": "loot", "output_folder": "out", "clips": [clip]}, area)
    assert http_server.requests == ["/evil/index.m3u8"]
    assert not (area / "out").exists()
    assert_no_canary(secret, area, tmp_path / "work")


def test_a_million_line_playlist_is_refused_at_once(area, http_server):
    # 2 MB: under the size bound, so the line bound refuses it, before any parsing.
    (area / "big").mkdir()
    (area / "big/index.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n" + "x\n" * 1_000_000)
    started = time.monotonic()
    with pytest.raises(PermanentError, match="has 1000003 lines, more than 200000"):
        steps.fetch_sources(make_ctx("createmp4", {"content_id": "b", "source_folder": "big"}, area))
    assert time.monotonic() - started < 2
    # A million real lines (half a million segments) is over the size bound: refused as it is read.
    (http_server.root / "big.m3u8").write_text("#EXTM3U\n" + "#EXTINF:1,\ns.ts\n" * 500_000)
    clip = {"source": f"{http_server.url}/big.m3u8", "start": 0, "end": 1}
    started = time.monotonic()
    with pytest.raises(PermanentError, match="is larger than 4194304 bytes"):
        steps.fetch_clips(
            make_ctx("vodcapture", {"content_id": "b", "output_folder": "o", "clips": [clip]}, area)
        )
    assert time.monotonic() - started < 2


def test_the_model_keeps_only_what_the_engine_needs():
    """Whatever a playlist holds besides, the model has segments, keys, init sections, byte ranges and
    date-times, every URI resolved; variants keep their bandwidth and known attributes only."""
    text = media(
        "#EXT-X-MEDIA-SEQUENCE:7",
        '#EXT-X-DATERANGE:ID="ad",START-DATE="2024-01-01T00:00:00Z",X-EVIL="{canary}"',
        "#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:00Z",
        f'#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV={ZERO_IV[:-1]}1,X-OTHER="x"',
        '#EXT-X-MAP:URI="init.mp4",BYTERANGE="800@0"',
        "#EXTINF:1.5,title",
        "#EXT-X-BYTERANGE:1000@800",
        "s.mp4",
        "#EXT-X-KEY:METHOD=NONE",
        "#EXTINF:2,",
        "#EXT-X-BYTERANGE:500",
        "s.mp4",
    )
    playlist = hls.parse_media(text, "https://cdn.example/live/index.m3u8")
    first, second = playlist.segments
    assert (first.uri, first.duration, first.sequence) == ("https://cdn.example/live/s.mp4", 1.5, 7)
    assert first.key == hls.Key("https://cdn.example/live/k.key", bytes(15) + b"\x01")
    assert first.init == hls.InitSection("https://cdn.example/live/init.mp4", hls.ByteRange(800, 0))
    assert first.byterange == hls.ByteRange(1000, 800) and second.byterange == hls.ByteRange(500, 1800)
    assert second.key is None and second.sequence == 8 and second.start == 1.5
    assert str(second.program_date_time) == "2024-01-01 00:00:01.500000+00:00"
    (variant,) = hls.parse_master(
        '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=900,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2",'
        'X-EVIL="a\\"b",CLOSED-CAPTIONS=NONE\nv/index.m3u8\n',
        "https://cdn.example/master.m3u8",
    )
    assert variant == hls.Variant(
        "https://cdn.example/v/index.m3u8",
        900,
        'BANDWIDTH=900,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"',
    )


def test_the_work_dir_keeps_no_refused_download(area, canary, http_server, tmp_path):
    """A segment refused after it was fetched (it is text) is deleted, not left in the work dir."""
    canary_path, secret = canary
    shutil.copyfile(canary_path, http_server.root / "seg.ts")
    (http_server.root / "index.m3u8").write_text(media("#EXTINF:1.0,\nseg.ts"))
    clip = {"source": f"{http_server.url}/index.m3u8", "start": 0, "end": 1}
    with pytest.raises(PermanentError, match=r"segment 0 .*/seg.ts is text, not"):
        steps.fetch_clips(
            make_ctx("vodcapture", {"content_id": "c", "output_folder": "o", "clips": [clip]}, area)
        )
    assert "/seg.ts" in http_server.requests
    assert_no_canary(secret, tmp_path / "work")
