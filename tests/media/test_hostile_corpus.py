"""A corpus of hostile media inputs, each run through the engine with every media workflow that accepts
it: nothing outside the client's own area reaches any output, log entry or callback body.

Two canaries stand for the worker's secrets: a file outside storage holding a random secret (the
operator's key, ``SECRET_KEY`` in a file), and a variable in the worker's environment (what
``/proc/self/environ`` would show ffmpeg). A second client's area holds a third secret. Every input
below tries to make the engine or ffmpeg read one of them: playlists with control characters inside
their attributes, ``EXT-X-MAP``/``EXT-X-KEY``/segment URIs that are absolute, ``file:``, ``..``, another
client's path or ffmpeg protocol strings, byte ranges, self-referencing and deeply nested masters, a
playlist of a million lines, segments that are really playlists or concat lists, symbolic links,
an MP4 whose data reference names an external file, and concat directives hidden in file names.

Each job is submitted with ``job_submit`` and run from the engine's own messages (the engine tests'
in-process broker); its step runs ffmpeg in this process's environment, where the canary variable is set.
Every job must end in a clear state: refused at submission with a message, or completed (failed or not)
with a message, and the canaries must appear nowhere: in no file the job wrote (raw bytes, and the
payload of every packet ffmpeg can demux from it), no log entry, no callback body, no task result.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest

from callbacks.models import CallbackDelivery
from jobs.models import Job, Task
from jobs.states import JobState
from logs.models import LogEntry
from media.ffmpeg import ffmpeg_exe
from taskengine_site.errors import DomainError
from tests.media.conftest import make_media

FILE_CANARY = f"FILECANARY{secrets.token_hex(12)}"
ENV_CANARY = f"ENVCANARY{secrets.token_hex(12)}"
VICTIM_CANARY = f"VICTIMCANARY{secrets.token_hex(12)}"
CANARIES = (FILE_CANARY, ENV_CANARY, VICTIM_CANARY)


@dataclass
class World:
    """Where one corpus case plays out."""

    root: Path  # the storage root
    area: Path  # the attacking client's area
    victim: Path  # another client's area
    canary: Path  # a file outside storage
    http: Path  # what the HTTP server serves
    http_url: str
    media: Path  # a small honest MP4 (outside storage)
    planted: set[Path] = field(default_factory=set)


def _write(world: World, path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    world.planted.add(path)
    return path


# --- honest material the hostile inputs are built around ------------------------------------------


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> dict[str, Path]:
    """A 2 s MP4, its HLS (MPEG-TS) segments, and an fMP4 HLS with its init section."""
    folder = tmp_path_factory.mktemp("honest")
    mp4 = make_media(folder / "honest.mp4", seconds=2, size="160x90")
    ts = folder / "ts"
    ts.mkdir()
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(mp4), "-c", "copy"]
    subprocess.run(
        [*base, "-f", "hls", "-hls_time", "1", "-hls_list_size", "0", str(ts / "honest.m3u8")], check=True
    )
    fmp4 = folder / "fmp4"
    fmp4.mkdir()
    subprocess.run(
        [
            *base,
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
            str(fmp4 / "honest.m3u8"),
        ],
        check=True,
    )
    return {"mp4": mp4, "ts": ts, "fmp4": fmp4}


def _segments(honest: dict[str, Path], kind: str = "ts") -> list[Path]:
    return sorted(p for p in honest[kind].iterdir() if p.suffix in (".ts", ".m4s"))


def _copy_segments(world: World, honest: dict[str, Path], folder: Path, kind: str = "ts") -> list[str]:
    names = []
    for segment in _segments(honest, kind):
        _write(world, folder / segment.name, segment.read_bytes())
        names.append(segment.name)
    if kind == "fmp4":
        _write(world, folder / "init.mp4", (honest["fmp4"] / "init.mp4").read_bytes())
    return names


def _media_playlist(lines: list[str], segments: list[str], *, head: list[str] | None = None) -> str:
    body = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:2", *(head or [])]
    for name in segments:
        body += ["#EXTINF:1.0,", name]
    return "\n".join([*body, *lines, "#EXT-X-ENDLIST", ""])


# --- the corpus ----------------------------------------------------------------------------------------
# Each case writes its input into ``folder`` (the source folder in the area, or the HTTP server's root)
# and returns the name of the entry a clip would name (a playlist or a media file).

Builder = Callable[[World, dict[str, Path], Path], str]


def _playlist_case(make: Callable[[World, list[str]], str], kind: str = "ts") -> Builder:
    def build(world: World, honest: dict[str, Path], folder: Path) -> str:
        segments = _copy_segments(world, honest, folder, kind)
        _write(world, folder / "index.m3u8", make(world, segments))
        return "index.m3u8"

    return build


def _key_injection(world: World, segments: list[str], *, where: str, separator: str) -> str:
    """The issue's exploit: a separator inside an EXT-X-KEY attribute smuggles an EXT-X-MAP line."""
    smuggled = f"{separator}#EXT-X-MAP:URI={world.canary},BYTERANGE=4096@0{separator}"
    key = {
        "method": f"#EXT-X-KEY:METHOD=NONE{smuggled}",
        "iv": f"#EXT-X-KEY:METHOD=AES-128,URI=k.key,IV=0x{'0' * 32}{smuggled}",
        "uri": f'#EXT-X-KEY:METHOD=AES-128,URI="k{smuggled}.key"',
    }[where]
    return _media_playlist([], segments, head=[key])


def _segment_uri(uri_for: Callable[[World], str]) -> Builder:
    # The hostile segment comes first, so even a clip of the first second needs it.
    def make(world: World, segments: list[str]) -> str:
        return _media_playlist([], [uri_for(world), *segments])

    return _playlist_case(make)


def _map_uri(uri_for: Callable[[World], str], extra: str = "") -> Builder:
    def make(world: World, segments: list[str]) -> str:
        return _media_playlist([], segments, head=[f'#EXT-X-MAP:URI="{uri_for(world)}"{extra}'])

    return _playlist_case(make, "fmp4")


def _key_uri(uri_for: Callable[[World], str]) -> Builder:
    def make(world: World, segments: list[str]) -> str:
        return _media_playlist([], segments, head=[f'#EXT-X-KEY:METHOD=AES-128,URI="{uri_for(world)}"'])

    return _playlist_case(make)


def _self_master(world: World, honest: dict[str, Path], folder: Path) -> str:
    _write(world, folder / "index.m3u8", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nindex.m3u8\n")
    return "index.m3u8"


def _nested_masters(world: World, honest: dict[str, Path], folder: Path) -> str:
    for depth in range(60):
        _write(
            world,
            folder / f"m{depth}.m3u8",
            f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH={1000 + depth}\nm{depth + 1}.m3u8\n",
        )
    segments = _copy_segments(world, honest, folder)
    _write(world, folder / "m60.m3u8", _media_playlist([], segments))
    return "m0.m3u8"


def _million_lines(world: World, honest: dict[str, Path], folder: Path) -> str:
    segments = _copy_segments(world, honest, folder)
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2"]
    lines += ["#EXTINF:1.0,", segments[0]] * 500_000
    _write(world, folder / "index.m3u8", "\n".join(lines) + "\n")
    return "index.m3u8"


def _segment_is_a_playlist(world: World, honest: dict[str, Path], folder: Path) -> str:
    _write(world, folder / "evil.ts", f"#EXTM3U\n#EXT-X-MAP:URI={world.canary}\n#EXTINF:1,\n{world.canary}\n")
    _write(world, folder / "index.m3u8", _media_playlist([], ["evil.ts"]))
    return "index.m3u8"


def _segment_is_a_concat_list(world: World, honest: dict[str, Path], folder: Path) -> str:
    _write(world, folder / "evil.ts", f"ffconcat version 1.0\nfile '{world.canary}'\n")
    _write(world, folder / "index.m3u8", _media_playlist([], ["evil.ts"]))
    return "index.m3u8"


def _mp4_is_a_playlist(world: World, honest: dict[str, Path], folder: Path) -> str:
    _write(world, folder / "video.mp4", f"#EXTM3U\n#EXTINF:1,\n{world.canary}\n#EXT-X-ENDLIST\n")
    return "video.mp4"


def _mp4_is_a_concat_list(world: World, honest: dict[str, Path], folder: Path) -> str:
    _write(world, folder / "video.mp4", f"ffconcat version 1.0\nfile '{world.canary}'\n")
    return "video.mp4"


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def alias_dref(target: Path) -> bytes:
    """A ``dref`` box whose one entry is a Macintosh alias record naming ``target`` by absolute path
    (record type 18): what the mov demuxer opens as the track's data when it follows drefs."""
    path = str(target).encode()
    path += b"\0" * (len(path) % 2)
    records = struct.pack(">hH", 18, len(path)) + path + struct.pack(">hH", -1, 0)
    alias = b"\0" * 10  # creator and record header, skipped by the demuxer
    alias += bytes([1]) + b"/".ljust(27, b"\0")  # volume name
    alias += b"\0" * 12
    alias += bytes([len(target.name[:63])]) + target.name.encode()[:63].ljust(63, b"\0")
    alias += b"\0" * 16 + struct.pack(">HH", 0, 0) + b"\0" * 16 + records
    entry = _box(b"alis", b"\0\0\0\0" + alias)
    return _box(b"dref", b"\0\0\0\0" + struct.pack(">I", 1) + entry)


def with_external_dref(mp4: bytes, target: Path) -> bytes:
    """``mp4`` with every track's ``dref`` replaced by an alias naming ``target`` (the enclosing boxes'
    sizes adjusted)."""
    containers = (b"moov", b"trak", b"mdia", b"minf", b"dinf")

    def rewrite(data: bytes) -> bytes:
        out = b""
        position = 0
        while position + 8 <= len(data):
            size = struct.unpack(">I", data[position : position + 4])[0]
            kind = data[position + 4 : position + 8]
            if size < 8 or position + size > len(data):
                return out + data[position:]
            body = data[position + 8 : position + size]
            if kind == b"dref":
                out += alias_dref(target)
            elif kind in containers:
                inner = rewrite(body)
                out += struct.pack(">I", 8 + len(inner)) + kind + inner
            else:
                out += data[position : position + size]
            position += size
        return out + data[position:]

    return rewrite(mp4)


def _external_dref(world: World, honest: dict[str, Path], folder: Path) -> str:
    _write(world, folder / "video.mp4", with_external_dref(honest["mp4"].read_bytes(), world.canary))
    return "video.mp4"


def _symlink_to_canary(world: World, honest: dict[str, Path], folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "video.mp4").symlink_to(world.canary)
    return "video.mp4"


def _symlink_to_victim(world: World, honest: dict[str, Path], folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "video.mp4").symlink_to(world.victim / "private/secret.mp4")
    return "video.mp4"


def _playlist_naming_a_symlink(world: World, honest: dict[str, Path], folder: Path) -> str:
    segments = _copy_segments(world, honest, folder)
    (folder / "linked.ts").symlink_to(world.canary)
    _write(world, folder / "index.m3u8", _media_playlist([], ["linked.ts", *segments]))
    return "index.m3u8"


def _concat_directives_in_names(world: World, honest: dict[str, Path], folder: Path) -> str:
    """Two honest sources whose stored names would, written verbatim into an ffconcat list, add a
    ``file`` line naming the canary."""
    _write(world, folder / "a.mp4", honest["mp4"].read_bytes())
    _write(world, folder / f"b'\nfile '{world.canary}'\nfile 'c.mp4", honest["mp4"].read_bytes())
    return "a.mp4"


CONTROL_SEPARATORS = {"nul": "\0", "cr": "\r", "lf": "\n", "vt": "\v", "u2028": "\u2028"}

CORPUS: dict[str, tuple[Builder, tuple[str, ...]]] = {}
# Kinds: "folder" (source_folder of the five folder workflows), "clip" (a vodcapture clip in storage),
# "http" (a vodcapture clip served over HTTP).
ALL = ("folder", "clip", "http")
for where in ("method", "iv", "uri"):
    for sep_name, sep in CONTROL_SEPARATORS.items():
        if (where, sep_name) in (("method", "lf"), ("iv", "lf")):
            continue  # a plain line break there is just the next line: covered by the others
        CORPUS[f"key-{where}-{sep_name}"] = (
            _playlist_case(functools.partial(_key_injection, where=where, separator=sep)),
            ALL,
        )
CORPUS.update(
    {
        "segment-nul-in-uri": (_segment_uri(lambda w: f"seg\0{w.canary}"), ALL),
        "segment-absolute": (_segment_uri(lambda w: str(w.canary)), ALL),
        "segment-file-url": (_segment_uri(lambda w: f"file://{w.canary}"), ALL),
        "segment-dotdot": (_segment_uri(lambda w: "../../../../../../../../" + str(w.canary)), ALL),
        "segment-other-client": (_segment_uri(lambda w: f"../../{w.victim.name}/private/secret.ts"), ALL),
        "segment-concat": (_segment_uri(lambda w: f"concat:{w.canary}|seg.ts"), ALL),
        "segment-subfile": (_segment_uri(lambda w: f"subfile,,start,0,end,0,,:{w.canary}"), ALL),
        "segment-data": (_segment_uri(lambda w: "data:video/mp2t;base64,R0ZJTEVDQU5BUlk="), ALL),
        "segment-crypto": (_segment_uri(lambda w: f"crypto:{w.canary}"), ALL),
        "segment-proc-environ": (_segment_uri(lambda w: "/proc/self/environ"), ALL),
        "map-absolute": (_map_uri(lambda w: str(w.canary)), ALL),
        "map-file-url": (_map_uri(lambda w: f"file://{w.canary}"), ALL),
        "map-dotdot": (_map_uri(lambda w: "../../../../../../../.." + str(w.canary)), ALL),
        "map-byterange-local": (_map_uri(lambda w: str(w.canary), ',BYTERANGE="4096@0"'), ALL),
        "map-proc-environ": (_map_uri(lambda w: "/proc/self/environ"), ALL),
        "map-other-client": (_map_uri(lambda w: f"../../{w.victim.name}/private/secret.mp4"), ALL),
        "key-absolute": (_key_uri(lambda w: str(w.canary)), ALL),
        "key-data": (_key_uri(lambda w: "data:;base64,AAAAAAAAAAAAAAAAAAAAAA=="), ALL),
        "key-method-sample-aes": (
            _playlist_case(
                lambda w, s: _media_playlist([], s, head=['#EXT-X-KEY:METHOD=SAMPLE-AES,URI="k"'])
            ),
            ALL,
        ),
        "key-iv-malformed": (
            _playlist_case(
                lambda w, s: _media_playlist([], s, head=['#EXT-X-KEY:METHOD=AES-128,URI="k",IV=0xZZ,x=1'])
            ),
            ALL,
        ),
        "master-self-reference": (_self_master, ALL),
        "master-nested-60": (_nested_masters, ALL),
        "playlist-million-lines": (_million_lines, ("folder", "clip")),
        "segment-is-a-playlist": (_segment_is_a_playlist, ALL),
        "segment-is-a-concat-list": (_segment_is_a_concat_list, ALL),
        "mp4-is-a-playlist": (_mp4_is_a_playlist, ALL),
        "mp4-is-a-concat-list": (_mp4_is_a_concat_list, ALL),
        "mp4-external-dref": (_external_dref, ALL),
        "symlink-to-canary": (_symlink_to_canary, ("folder", "clip")),
        "symlink-to-other-client": (_symlink_to_victim, ("folder", "clip")),
        "playlist-names-a-symlink": (_playlist_naming_a_symlink, ("folder", "clip")),
        "concat-directives-in-names": (_concat_directives_in_names, ("folder",)),
    }
)

# The workflows that read a source folder, with parameters that keep their work small.
FOLDER_WORKFLOWS: dict[str, dict[str, Any]] = {
    "vodstream": {
        "renditions": 1,
        "segment_duration": 1,
        "video_preset": "ultrafast",
        "thumbnail_time": 0.5,
        "generate_mp4": True,
    },
    "createmp4": {},
    "capture_frame": {"frame_time": 0.5},
    "generate_gif": {"duration": 0.5, "width": 64, "fps": 5},
    "build_thumbnails": {"preview_thumbnails_interval": 1, "thumbnail_width": 64},
}


@pytest.fixture
def world(tmp_path, settings, http_server, te_client, make_client, honest, monkeypatch) -> World:
    settings.TASKENGINE_STORAGE_ROOT = tmp_path / "storage"
    victim_client, _ = make_client()
    victim = settings.TASKENGINE_STORAGE_ROOT / victim_client.name
    (victim / "private").mkdir(parents=True)
    (victim / "private/secret.mp4").write_bytes(VICTIM_CANARY.encode() * 200)
    (victim / "private/secret.ts").write_bytes(VICTIM_CANARY.encode() * 200)
    canary = tmp_path / "outside" / "canary.bin"
    canary.parent.mkdir()
    # Long enough that any read of more than a few bytes holds the whole secret.
    canary.write_bytes((FILE_CANARY + "\n").encode() * 500)
    monkeypatch.setenv("TASKENGINE_TEST_CANARY", ENV_CANARY)
    area = settings.TASKENGINE_STORAGE_ROOT / te_client.name
    area.mkdir(parents=True)
    return World(
        root=settings.TASKENGINE_STORAGE_ROOT,
        area=area,
        victim=victim,
        canary=canary,
        http=http_server.root,
        http_url=http_server.url,
        media=honest["mp4"],
    )


@dataclass
class Outcome:
    workflow: str
    refused: str | None = None  # the 400 message, when refused at submission
    job: Job | None = None


def _run(submit, broker, workflow: str, parameters: dict[str, Any]) -> Outcome:
    try:
        job = submit(workflow, parameters={**parameters, "rest_endpoints": ["https://hooks.example.com/cb"]})
    except DomainError as refused:
        return Outcome(workflow, refused=refused.message)
    broker.drain(skip=lambda message: message.queue == "callback")
    job.refresh_from_db()
    return Outcome(workflow, job=job)


def _demuxed_payloads(path: Path) -> bytes:
    """Every packet's bytes that ffmpeg (PyAV) can demux from ``path``; empty if it is not media."""
    try:
        with av.open(str(path)) as container:
            return b"".join(bytes(packet) for packet in container.demux() if packet.size)
    except (av.error.FFmpegError, UnicodeDecodeError):
        return b""


def _leaks(data: bytes) -> list[str]:
    return [canary for canary in CANARIES if canary.encode() in data]


def _assert_no_canary(world: World, outcomes: list[Outcome], work_dir: Path) -> None:
    found: list[str] = []
    for base in (world.area, work_dir):
        if not base.exists():
            continue
        for path in base.rglob("*"):
            if path.is_symlink() or not path.is_file() or path in world.planted:
                continue
            raw = path.read_bytes()
            found += [f"{path} (raw): {c}" for c in _leaks(raw)]
            if path.suffix in (".mp4", ".ts", ".m4s", ".m3u8", ".gif", ".jpg", ".aac"):
                found += [f"{path} (demuxed): {c}" for c in _leaks(_demuxed_payloads(path))]
    for outcome in outcomes:
        if outcome.refused is not None:
            found += [f"{outcome.workflow} refusal: {c}" for c in _leaks(outcome.refused.encode())]
            continue
        assert outcome.job is not None
        texts = [outcome.job.message or ""]
        texts += list(LogEntry.objects.filter(job_id=outcome.job.pk).values_list("message", flat=True))
        texts += list(CallbackDelivery.objects.filter(job_id=outcome.job.pk).values_list("body", flat=True))
        texts += [
            json.dumps(r) for r in Task.objects.filter(job_id=outcome.job.pk).values_list("result", flat=True)
        ]
        for text in texts:
            found += [f"{outcome.workflow} job {outcome.job.pk} text: {c}" for c in _leaks(text.encode())]
    assert found == []


def _assert_clear_state(outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.refused is not None:
            assert outcome.refused.startswith("parameters."), outcome.refused
            continue
        job = outcome.job
        assert job is not None
        assert job.queue_state == JobState.COMPLETED, (outcome.workflow, job.queue_state)
        if job.failed:
            # Failed at once (a hostile input is no reason to retry) and saying why, in one line.
            assert job.message and "Traceback" not in job.message, (outcome.workflow, job.message)
            assert max(Task.objects.filter(job_id=job.pk).values_list("attempts", flat=True)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_hostile_input_reaches_no_canary(case, world, honest, submit, broker, tmp_path, settings):
    build, kinds = CORPUS[case]
    outcomes: list[Outcome] = []
    if "folder" in kinds or "clip" in kinds:
        entry = build(world, honest, world.area / "src")
        if "folder" in kinds:
            for workflow, extra in FOLDER_WORKFLOWS.items():
                parameters = {"content_id": "out", "source_folder": "src", "output_folder": f"out/{workflow}"}
                outcomes.append(_run(submit, broker, workflow, {**parameters, **extra}))
        if "clip" in kinds:
            clips = [{"source": f"src/{entry}", "start": 0, "end": 1}]
            parameters = {"content_id": "out", "output_folder": "out/vodcapture", "clips": clips}
            outcomes.append(_run(submit, broker, "vodcapture", parameters))
    if "http" in kinds:
        entry = build(world, honest, world.http / "src")
        clips = [{"source": f"{world.http_url}/src/{entry}", "start": 0, "end": 1}]
        parameters = {"content_id": "out", "output_folder": "out/vodcapture-http", "clips": clips}
        outcomes.append(_run(submit, broker, "vodcapture", parameters))
    assert outcomes
    _assert_clear_state(outcomes)
    _assert_no_canary(world, outcomes, Path(settings.TASKENGINE_WORK_DIR))


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 30
    # Every control character is tried inside every attribute of the key line.
    assert {name for name in CORPUS if name.startswith("key-uri-")} == {
        f"key-uri-{sep}" for sep in CONTROL_SEPARATORS
    }


def test_the_canaries_are_where_an_unconfined_reader_would_find_them(world):
    """The corpus proves something only if the secrets are there to be read."""
    assert FILE_CANARY.encode() in world.canary.read_bytes()
    assert os.environ["TASKENGINE_TEST_CANARY"] == ENV_CANARY
    assert VICTIM_CANARY.encode() in (world.victim / "private/secret.mp4").read_bytes()


def test_the_dref_case_names_the_canary_to_ffmpegs_own_parser(honest, tmp_path):
    """The MP4 with an external data reference is well formed: ffmpeg's mov demuxer reads the alias
    record and the canary's path from it (and, by default and as the engine runs it, does not open it)."""
    canary = tmp_path / "canary.bin"
    canary.write_bytes((FILE_CANARY + "\n").encode() * 20_000)
    source = tmp_path / "video.mp4"
    source.write_bytes(with_external_dref(honest["mp4"].read_bytes(), canary))
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "debug", "-i", str(source)]
    described = subprocess.run(command, capture_output=True).stderr.decode(errors="replace")
    assert "filename canary.bin" in described and "type 18, len" in described
