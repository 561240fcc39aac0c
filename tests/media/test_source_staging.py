"""Honest sources still work after hardening, and reach ffmpeg only under names the engine made:
AES-128 streams are decrypted by the engine (the playlist ffmpeg reads holds no key), byte-range and
fMP4 streams are cut and sniffed, client file names never enter an ffconcat list, and an MP4's
external data reference is never followed."""

from __future__ import annotations

import secrets
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from jobs.workflows.registry import PermanentError, get_step, load_steps
from media import containers, storage
from media.definitions import MEDIA_DEFINITIONS
from media.ffmpeg import ffmpeg_exe
from media.steps import vod as steps
from tests.media.conftest import FPS, decode, make_ctx, make_media, put

SECONDS = 4
FRAMES = SECONDS * FPS


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def run_steps(workflow, parameters, area, *, job_id, before=None, check=None):
    """Run a workflow's steps in order with one job id; call ``check()`` before the step ``before``
    (the last step removes the job's work directory, which some tests look into)."""
    load_steps()
    results: dict = {}
    for item in MEDIA_DEFINITIONS[workflow]:
        if item["step"] == before and check is not None:
            check()
        ctx = make_ctx(
            workflow,
            parameters,
            area,
            step_parameters=item.get("parameters"),
            results=dict(results),
            job_id=job_id,
        )
        results[item["step"]] = get_step(item["step"]).fn(ctx)
    return results


def hls_copy(source: Path, folder: Path, *extra: str, name: str = "index.m3u8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-i",
        str(source),
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_list_size",
        "0",
        *extra,
        str(folder / name),
    )
    return folder / name


def encrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()


def encrypted_by_sequence(source: Path, folder: Path, key: bytes, first: int = 5) -> Path:
    """An AES-128 stream whose key tag has no IV: each segment's IV is its media sequence number, as
    RFC 8216 §5.2 says (ffmpeg always writes an IV, so the segments are encrypted here)."""
    clear = folder.parent / f"{folder.name}-clear"
    hls_copy(source, clear, "-hls_segment_filename", str(clear / "s%03d.ts"))
    folder.mkdir(parents=True)
    (folder / "key.bin").write_bytes(key)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    lines.append('#EXT-X-KEY:METHOD=AES-128,URI="key.bin"')
    for index, segment in enumerate(sorted(clear.glob("s*.ts"))):
        sequence = first + index
        (folder / f"part{sequence}.ts").write_bytes(
            encrypt(segment.read_bytes(), key, sequence.to_bytes(16, "big"))
        )
        lines += ["#EXTINF:1.000000,", f"part{sequence}.ts"]
    (folder / "index.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    shutil.rmtree(clear)
    return folder / "index.m3u8"


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def assert_staged_playlist_is_clean(work: Path, key: bytes) -> None:
    """The playlists the engine wrote for ffmpeg hold no key tag, no crypto, and only names it made;
    no file in the work dir holds the key."""
    playlists = [path for path in files_under(work) if path.name == "index.m3u8"]
    assert playlists
    for playlist in playlists:
        text = playlist.read_text()
        assert "#EXT-X-KEY" not in text and "crypto" not in text.lower()
        names = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert names and all(name.startswith("segment") for name in names), names
        assert {path.name for path in playlist.parent.iterdir()} >= set(names)
    for path in files_under(work):
        assert key not in path.read_bytes(), path


def test_createmp4_from_an_aes128_stream_in_storage(area, media_cache, tmp_path):
    """ffmpeg's own AES-128 output (the key tag gives the IV) read back from storage."""
    key = secrets.token_bytes(16)
    folder = area / "enc"
    folder.mkdir()
    (tmp_path / "k.key").write_bytes(key)
    (tmp_path / "k.keyinfo").write_text(f"k.key\n{tmp_path / 'k.key'}\n{secrets.token_hex(16)}\n")
    hls_copy(media_cache(SECONDS), folder, "-hls_key_info_file", str(tmp_path / "k.keyinfo"))
    shutil.copyfile(tmp_path / "k.key", folder / "k.key")
    assert "IV=0x" in (folder / "index.m3u8").read_text()
    work = storage.job_work_dir(700)
    parameters = {"content_id": "ep", "source_folder": "enc", "output_folder": "mp4"}
    results = run_steps(
        "createmp4",
        parameters,
        area,
        job_id=700,
        before="publish_outputs",
        check=lambda: assert_staged_playlist_is_clean(work, key),
    )
    assert results["publish_outputs"]["files"] == ["mp4/ep.mp4"]
    decoded = decode(area / "mp4/ep.mp4")
    assert decoded["video"][0]["frames"] == FRAMES and abs(decoded["audio"][0] - SECONDS) < 0.1


def test_vodcapture_of_an_aes128_stream_over_http_with_sequence_number_ivs(area, media_cache, http_server):
    key = secrets.token_bytes(16)
    encrypted_by_sequence(media_cache(SECONDS), http_server.root / "live", key, first=5)
    work = storage.job_work_dir(701)
    clip = {"source": f"{http_server.url}/live/index.m3u8", "start": 1, "end": 3}
    parameters = {"content_id": "cut", "output_folder": "vod", "segment_duration": 1, "clips": [clip]}
    run_steps(
        "vodcapture",
        parameters,
        area,
        job_id=701,
        before="publish_outputs",
        check=lambda: assert_staged_playlist_is_clean(work, key),
    )
    # Segments 6 and 7 (seconds 1 to 3) decrypted with IVs 6 and 7: every frame decodes.
    (video,) = decode(area / "vod/cut.m3u8")["video"]
    assert video["frames"] == 2 * FPS
    assert sorted(r for r in http_server.requests if r.endswith(".ts")) == [
        "/live/part6.ts",
        "/live/part7.ts",
    ]


def test_a_segment_that_does_not_decrypt_is_refused(area, media_cache):
    encrypted_by_sequence(media_cache(SECONDS), area / "enc", secrets.token_bytes(16))
    (area / "enc/key.bin").write_bytes(secrets.token_bytes(16))  # not the key the segments need
    ctx = make_ctx("createmp4", {"content_id": "x", "source_folder": "enc"}, area)
    with pytest.raises(
        PermanentError, match=r"segment 5 enc/part5.ts (does not decrypt with its AES-128 key|is )"
    ):
        steps.fetch_sources(ctx)


def test_byte_range_streams_from_storage_and_over_http(area, media_cache, http_server):
    """One file, each segment a byte range of it (ffmpeg's single_file): cut out by the engine."""
    playlist = hls_copy(media_cache(SECONDS), area / "single", "-hls_flags", "single_file")
    assert "#EXT-X-BYTERANGE" in playlist.read_text()
    run_steps(
        "createmp4", {"content_id": "s", "source_folder": "single", "output_folder": "o"}, area, job_id=702
    )
    assert decode(area / "o/s.mp4")["video"][0]["frames"] == FRAMES
    shutil.copytree(area / "single", http_server.root / "single")
    clip = {"source": f"{http_server.url}/single/index.m3u8", "start": 2, "end": 4}
    parameters = {"content_id": "c", "output_folder": "v", "segment_duration": 1, "clips": [clip]}
    run_steps("vodcapture", parameters, area, job_id=703)
    assert decode(area / "v/c.m3u8")["video"][0]["frames"] == 2 * FPS


def test_fmp4_stream_with_an_init_section(area, media_cache):
    hls_copy(media_cache(SECONDS), area / "cmaf", "-hls_segment_type", "fmp4")
    assert "#EXT-X-MAP" in (area / "cmaf/index.m3u8").read_text()
    work = storage.job_work_dir(704)

    def check() -> None:
        staged = sorted(path.name for path in (work / "clips/0").iterdir())
        assert staged == ["index.m3u8", "init0.mp4", "segment00000.mp4", "segment00001.mp4", "staged.json"]

    clip = {"source": "cmaf/index.m3u8", "start": 1, "end": 3}
    parameters = {"content_id": "f", "output_folder": "o", "segment_duration": 1, "clips": [clip]}
    run_steps("vodcapture", parameters, area, job_id=704, before="publish_outputs", check=check)
    assert decode(area / "o/f.m3u8")["video"][0]["frames"] == 2 * FPS


def test_file_names_never_reach_an_ffconcat_list(area, media_cache):
    """A stored name holding a quote and a newline would have written ffconcat directives (a third
    'file' line here). Sources are staged as source000.mp4, … and the list names only those."""
    put(area, media_cache(2), "parts/a.mp4")
    put(area, media_cache(3), "parts/a.mp4'\nfile 'a.mp4")
    work = storage.job_work_dir(705)

    def check() -> None:
        listing = (work / "sources/sources.ffconcat").read_text()
        assert listing == "ffconcat version 1.0\nfile source000.mp4\nfile source001.mp4\n"
        assert sorted(p.name for p in (work / "sources").iterdir()) == [
            "source000.mp4",
            "source001.mp4",
            "sources.ffconcat",
        ]

    results = run_steps(
        "createmp4",
        {"content_id": "whole", "source_folder": "parts", "output_folder": "o"},
        area,
        job_id=705,
        before="create_mp4",
        check=check,
    )
    assert results["fetch_sources"]["sources"] == ["a.mp4", "a.mp4'\nfile 'a.mp4"]
    # Both sources once, in name order: 2 s + 3 s.
    assert decode(area / "o/whole.mp4")["video"][0]["frames"] == 5 * FPS


def test_a_source_that_is_not_an_mp4_is_refused(area, media_cache):
    (area / "in").mkdir()
    (area / "in/a.mp4").write_text("ffconcat version 1.0\nfile '/etc/passwd'\n")
    with pytest.raises(PermanentError, match=r"source 'a.mp4' is an ffconcat list, not MP4"):
        steps.fetch_sources(make_ctx("capture_frame", {"content_id": "a", "source_folder": "in"}, area))
    (area / "clips").mkdir()
    (area / "clips/c.mp4").write_text("#EXTM3U\n#EXTINF:1,\n/etc/passwd\n")
    clip = {"source": "clips/c.mp4", "start": 0, "end": 1}
    with pytest.raises(PermanentError, match="clip 0's source is an HLS playlist, not MP4"):
        steps.fetch_clips(
            make_ctx("vodcapture", {"content_id": "c", "output_folder": "o", "clips": [clip]}, area)
        )


# --- an MP4 whose data reference names another file ---------------------------------------------------


def _boxes(data: bytes, start: int, end: int):
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        yield position, size, kind
        position += size


def _path_to(data: bytes, path: list[bytes], nth: int = 0) -> list[tuple[int, int]]:
    """(offset, size) of each box along ``path`` from the top level: the ``nth`` box of the second
    kind (the nth track), the first of every other kind."""
    found: list[tuple[int, int]] = []
    start, end = 0, len(data)
    for depth, kind in enumerate(path):
        matches = [(offset, size) for offset, size, box in _boxes(data, start, end) if box == kind]
        assert matches, f"no {kind!r} box"
        offset, size = matches[nth if depth == 1 else 0]
        found.append((offset, size))
        start, end = offset + 8, offset + size
    return found


def alias_record(name: str) -> bytes:
    """A QuickTime alias ('alis') data reference to ``name`` beside the movie (one level up from the
    movie, one level down to the target), as ffmpeg's mov demuxer reads one."""
    path = name.encode()
    body = bytes(10) + bytes(28) + bytes(12) + bytes([len(path)]) + path.ljust(63, b"\0") + bytes(16)
    body += struct.pack(">HH", 1, 1) + bytes(16)
    body += struct.pack(">hH", 2, len(path)) + path + (b"\0" if len(path) % 2 else b"")
    body += struct.pack(">hH", -1, 0)
    return struct.pack(">I4sI", 12 + len(body), b"alis", 0) + body


def with_external_reference(mp4: bytes, name: str, track: int) -> bytes:
    """``mp4`` (its moov after its mdat) with a track's data reference replaced by an alias to
    ``name``: every sample of that track is then to be read from that file, at the same offsets."""
    chain = _path_to(mp4, [b"moov", b"trak", b"mdia", b"minf", b"dinf", b"dref"], nth=track)
    (moov_offset, _), *_ = chain
    assert _path_to(mp4, [b"mdat"])[0][0] < moov_offset, "the moov must follow the mdat"
    dref_offset, dref_size = chain[-1]
    dref = struct.pack(">I4sII", 16 + len(alias_record(name)), b"dref", 0, 1) + alias_record(name)
    grown = len(dref) - dref_size
    out = bytearray(mp4[:dref_offset] + dref + mp4[dref_offset + dref_size :])
    for offset, size in chain[:-1]:
        struct.pack_into(">I", out, offset, size + grown)
    return bytes(out)


@pytest.fixture
def dref_mp4(tmp_path, canary_secret) -> tuple[bytes, bytes]:
    """An MP4 whose audio samples are to be read from ``loot.bin`` beside it (stream copy passes audio
    packets through unchecked); and the secret that file is full of."""
    source = make_media(tmp_path / "plain.mp4", seconds=2)
    return with_external_reference(source.read_bytes(), "loot.bin", track=1), canary_secret


@pytest.fixture
def canary_secret() -> bytes:
    return secrets.token_hex(16).encode()


def loot(secret: bytes) -> bytes:
    return (secret + b"\n") * 40_000


def test_an_external_data_reference_is_never_followed(area, dref_mp4, tmp_path):
    evil, secret = dref_mp4
    # The crafted file works: with drefs enabled, ffmpeg copies the referenced file's bytes out.
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "evil.mp4").write_bytes(evil)
    (lab / "loot.bin").write_bytes(loot(secret))
    ffmpeg("-enable_drefs", "1", "-i", str(lab / "evil.mp4"), "-c", "copy", str(lab / "followed.mp4"))
    assert secret in (lab / "followed.mp4").read_bytes()
    # The engine's options for an MP4 input do not follow it.
    ffmpeg(
        *containers.input_options(containers.ISOBMFF),
        "-i",
        str(lab / "evil.mp4"),
        "-c",
        "copy",
        str(lab / "engine.mp4"),
    )
    assert secret not in (lab / "engine.mp4").read_bytes()

    # Through createmp4, with the referenced name planted beside the staged source.
    (area / "in").mkdir()
    (area / "in/evil.mp4").write_bytes(evil)
    sources = storage.job_work_dir(706) / "sources"
    sources.mkdir(parents=True)
    (sources / "loot.bin").write_bytes(loot(secret))
    run_steps(
        "createmp4", {"content_id": "out", "source_folder": "in", "output_folder": "o"}, area, job_id=706
    )
    assert secret not in (area / "o/out.mp4").read_bytes()
    assert decode(area / "o/out.mp4")["video"][0]["frames"] == 2 * FPS

    # Joined with another source through an ffconcat list (its files are opened with mov's defaults).
    shutil.copyfile(area / "in/evil.mp4", area / "in/evil2.mp4")
    sources = storage.job_work_dir(707) / "sources"
    sources.mkdir(parents=True)
    (sources / "loot.bin").write_bytes(loot(secret))
    run_steps(
        "createmp4", {"content_id": "two", "source_folder": "in", "output_folder": "o"}, area, job_id=707
    )
    assert secret not in (area / "o/two.mp4").read_bytes()

    # As a vodcapture clip: its audio track, whose data lies elsewhere, has no packets, so the stitch
    # fails; clearly, and without a byte of the referenced file anywhere.
    clips = storage.job_work_dir(708) / "clips/0"
    clips.mkdir(parents=True)
    (clips / "loot.bin").write_bytes(loot(secret))
    clip = {"source": "in/evil.mp4", "start": 0, "end": 1}
    with pytest.raises(PermanentError, match="stitch failed"):
        run_steps("vodcapture", {"content_id": "v", "output_folder": "v", "clips": [clip]}, area, job_id=708)
    for path in [*files_under(area), *files_under(storage.job_work_dir(708))]:
        assert path.name == "loot.bin" or secret not in path.read_bytes(), path


@pytest.mark.parametrize(("container", "suffix"), [("mpegts", ".ts"), ("matroska", ".mkv")])
def test_a_clip_file_is_opened_as_what_it_holds(area, media_cache, container, suffix):
    """Whatever a clip's file is called, the engine names it, and ffmpeg opens it, after its content."""
    (area / "rec").mkdir()
    ffmpeg("-i", str(media_cache(SECONDS)), "-c", "copy", "-f", container, str(area / "rec/take.bin"))
    work = storage.job_work_dir(709)

    def check() -> None:
        assert (work / "clips/0" / f"source{suffix}").is_file()

    # Just after the keyframe at 1 s (a stream copy starts at the keyframe before the start, and
    # Matroska's timestamps put it a few milliseconds after 1 s) to before 3 s (a copy ends after the
    # last packet that starts before the end).
    clip = {"source": "rec/take.bin", "start": 1.03, "end": 2.99}
    parameters = {"content_id": "t", "output_folder": "o", "segment_duration": 1, "clips": [clip]}
    run_steps("vodcapture", parameters, area, job_id=709, before="publish_outputs", check=check)
    assert decode(area / "o/t.m3u8")["video"][0]["frames"] == 2 * FPS
