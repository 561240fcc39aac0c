"""Reading the engine's streaming output back with parsers others wrote: the ``m3u8`` package for HLS,
``mpegdash`` for DASH MPDs, ``pymp4`` for the protection boxes (``pssh``, ``tenc``, ``schm``, ``senc``).

ISO-BMFF nesting is walked here (which boxes hold boxes, and how many header bytes a sample entry has
before its children); every leaf box is handed to ``pymp4``'s own definitions.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import m3u8
from mpegdash.parser import MPEGDASHParser
from pymp4.parser import Box

CONTAINERS = {
    b"moov",
    b"trak",
    b"mdia",
    b"minf",
    b"stbl",
    b"moof",
    b"traf",
    b"mvex",
    b"edts",
    b"dinf",
    b"sinf",
}
CONTAINERS |= {b"schi"}
# Sample entries: bytes of their own fields before their child boxes.
SAMPLE_ENTRIES = {b"encv": 78, b"avc1": 78, b"enca": 28, b"mp4a": 28}
SYSTEM_IDS = {
    "clearkey": uuid.UUID("1077efec-c0b2-4d02-ace3-3c1e52e2fb4b"),
    "widevine": uuid.UUID("edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"),
    "playready": uuid.UUID("9a04f079-9840-4286-ab92-e65be0885f95"),
}


def walk(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Every box (type, whole box bytes) in ``data``, depth first."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
            header = 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            raise ValueError(f"box {kind!r} at {at} overruns its parent")
        yield kind, data[at : at + size]
        if kind in CONTAINERS:
            yield from walk(data, at + header, at + size)
        elif kind == b"stsd":
            yield from walk(data, at + header + 8, at + size)
        elif kind in SAMPLE_ENTRIES:
            yield from walk(data, at + header + SAMPLE_ENTRIES[kind], at + size)
        at += size


def boxes(path: Path, kind: bytes) -> list[Any]:
    """Every ``kind`` box of the file at ``path``, parsed by pymp4."""
    data = path.read_bytes()
    return [Box.parse(raw) for found, raw in walk(data) if found == kind]


def box_types(path: Path) -> set[bytes]:
    return {kind for kind, _ in walk(path.read_bytes())}


def pssh_systems(path: Path) -> set[str]:
    """The key systems whose ``pssh`` boxes are in the file."""
    names = {value: name for name, value in SYSTEM_IDS.items()}
    return {names.get(box.system_ID, str(box.system_ID)) for box in boxes(path, b"pssh")}


def senc_subsamples(path: Path, iv_size: int) -> list[list[tuple[int, int]]]:
    """Each sample's (clear bytes, encrypted bytes) ranges from the ``senc`` boxes of a media segment.

    Read here by ISO/IEC 23001-7's layout: pymp4's ``senc`` cannot parse subsample entries (its flag
    lookup fails) and assumes 8-byte IVs, where cbcs has none (a constant IV in ``tenc``).
    """
    samples = []
    for kind, raw in walk(path.read_bytes()):
        if kind != b"senc":
            continue
        flags = int.from_bytes(raw[9:12], "big")
        count = struct.unpack(">I", raw[12:16])[0]
        at = 16
        for _ in range(count):
            at += iv_size
            ranges = []
            if flags & 2:
                (n,) = struct.unpack(">H", raw[at : at + 2])
                at += 2
                for _ in range(n):
                    ranges.append(struct.unpack(">HI", raw[at : at + 6]))
                    at += 6
            samples.append(ranges)
    return samples


def mdat_samples(path: Path, sizes: list[int]) -> list[bytes]:
    """The samples of a one-track media segment's ``mdat``, cut by the ``trun`` sizes."""
    data = path.read_bytes()
    payload = next(raw[8:] for kind, raw in walk(data) if kind == b"mdat")
    samples, at = [], 0
    for size in sizes:
        samples.append(payload[at : at + size])
        at += size
    return samples


def trun_sizes(path: Path) -> list[int]:
    return [entry.sample_size for trun in boxes(path, b"trun") for entry in trun.sample_info]


def hls(path: Path) -> m3u8.M3U8:
    return m3u8.loads(path.read_text(), uri=str(path))


def mpd(path: Path) -> Any:
    return MPEGDASHParser.parse(str(path))


def mpd_segment_files(folder: Path, manifest: Any) -> dict[str, list[Path]]:
    """Every representation's init and media segment files, by representation id (SegmentTimeline)."""
    found: dict[str, list[Path]] = {}
    for period in manifest.periods:
        for adaptation in period.adaptation_sets:
            for representation in adaptation.representations:
                template = (representation.segment_templates or adaptation.segment_templates)[0]
                count = sum(1 + (s.r or 0) for s in template.segment_timelines[0].Ss)
                start = template.start_number or 1
                files = [folder / template.initialization] if template.initialization else []
                for number in range(start, start + count):
                    files.append(folder / template.media.replace("$Number%05d$", f"{number:05d}"))
                found[str(representation.id)] = files
    return found


def joined(out: Path, uri: str) -> Path:
    """One rendition as a single fragmented MP4: its init segment, then every media segment.

    FFmpeg's HLS demuxer knows no SAMPLE-AES-CTR key tags, so encrypted CMAF is decoded per rendition
    by its MP4 demuxer, which decrypts cenc and cbcs given the key."""
    playlist = hls(out / uri)
    target = out.parent / f"joined-{Path(uri).stem}.mp4"
    parts = [playlist.segments[0].init_section.uri, *(s.uri for s in playlist.segments)]
    target.write_bytes(b"".join((out / part).read_bytes() for part in parts))
    return target


def digest(path: Path, **options: str) -> str | None:
    """A hash of every decoded picture and sound of ``path``, or None when decoding fails."""
    import hashlib

    import av

    hasher = hashlib.sha256()
    try:
        with av.open(str(path), options=options) as container:
            for frame in container.decode(*[s for s in container.streams if s.type in ("video", "audio")]):
                for plane in getattr(frame, "planes", ()):
                    hasher.update(bytes(plane))
    except av.error.FFmpegError:
        return None
    return hasher.hexdigest()
