"""What a staged media file really is, told from its first bytes, and how ffmpeg must open it.

ffmpeg picks a demuxer by probing content unless told which one to use, and some demuxers read other
files on their own (an HLS or DASH playlist, an ffconcat list, an MP4 with external data references).
So every file the engine stages for ffmpeg is sniffed here, and one that is not the container it is
staged as (a "segment" that is really a playlist, a list or text) is refused before ffmpeg sees it;
the ffmpeg input options then force the demuxer that matches what was sniffed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from jobs.workflows.registry import PermanentError


@dataclass(frozen=True)
class Container:
    """A container the engine hands to ffmpeg: its name, the demuxer forced for it, the suffix of the
    file names the engine gives it (one ffmpeg's HLS demuxer accepts for that demuxer)."""

    name: str
    demuxer: str
    suffix: str


MPEGTS = Container("MPEG-TS", "mpegts", ".ts")
ISOBMFF = Container("MP4 (ISO-BMFF)", "mov", ".mp4")
ADTS = Container("ADTS AAC", "aac", ".aac")
MATROSKA = Container("Matroska", "matroska", ".mkv")

# What an HLS segment or init section may be; what a clip's file source may be.
SEGMENT_CONTAINERS = (MPEGTS, ISOBMFF, ADTS)
INIT_CONTAINERS = (ISOBMFF, MPEGTS)
CLIP_CONTAINERS = (ISOBMFF, MPEGTS, MATROSKA)

TS_PACKET = 188
# Box types an MP4 file, an fMP4 init section or an fMP4 segment starts with.
BOX_TYPES = frozenset(
    {b"ftyp", b"styp", b"moof", b"moov", b"sidx", b"free", b"skip", b"wide", b"mdat", b"emsg", b"prft"}
)
HEAD_BYTES = 4 * TS_PACKET
ID3_HEADER = 10


def _is_mpegts(head: bytes) -> bool:
    if len(head) < TS_PACKET:
        return False
    # Every packet starts with the sync byte: check as many packets as the head holds (up to four).
    return all(head[offset] == 0x47 for offset in range(0, len(head) - TS_PACKET + 1, TS_PACKET))


def _is_isobmff(head: bytes) -> bool:
    if len(head) < 8:
        return False
    size, kind = struct.unpack(">I4s", head[:8])
    return kind in BOX_TYPES and (size == 1 or size >= 8)


def _adts_sync(data: bytes) -> bool:
    return len(data) >= 7 and data[0] == 0xFF and (data[1] & 0xF6) == 0xF0


def _after_id3(path: Path, head: bytes) -> bytes:
    """The bytes after an ID3v2 tag at the start (packed-audio HLS segments carry one), else ``head``."""
    if len(head) < ID3_HEADER or head[:3] != b"ID3":
        return head
    sizes = head[6:10]
    if any(byte & 0x80 for byte in sizes):
        return b""
    size = ID3_HEADER + ((sizes[0] << 21) | (sizes[1] << 14) | (sizes[2] << 7) | sizes[3])
    if head[5] & 0x10:  # a footer follows the tag
        size += ID3_HEADER
    with path.open("rb") as stream:
        stream.seek(size)
        return stream.read(16)


def _head(path: Path) -> bytes:
    with path.open("rb") as stream:
        return stream.read(HEAD_BYTES)


def sniff(path: Path) -> Container | None:
    """The container ``path`` holds by its first bytes, or None when it is none the engine accepts."""
    head = _head(path)
    if _is_mpegts(head):
        return MPEGTS
    if _is_isobmff(head):
        return ISOBMFF
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return MATROSKA
    if _adts_sync(_after_id3(path, head)):
        return ADTS
    return None


def describe(path: Path) -> str:
    """What ``path`` looks like, for a message: a container's name, a playlist, a list, text, bytes."""
    found = sniff(path)
    if found is not None:
        return found.name
    head = _head(path)
    if not head:
        return "empty"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"#EXTM3U"):
        return "an HLS playlist"
    if text.startswith(b"ffconcat"):
        return "an ffconcat list"
    if text.startswith(b"<"):
        return "markup (XML or HTML)"
    if all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head[:64]):
        return "text"
    return "not a media container the engine reads"


def require(path: Path, allowed: tuple[Container, ...], what: str) -> Container:
    """The container ``path`` holds, one of ``allowed``; else ``PermanentError`` naming ``what`` it is."""
    found = sniff(path)
    if found is None or found not in allowed:
        expected = " or ".join(container.name for container in allowed)
        raise PermanentError(f"{what} is {describe(path)}, not {expected}: refused")
    return found


def input_options(container: Container) -> tuple[str, ...]:
    """ffmpeg options for an input file holding ``container``: its demuxer forced, local files only, no
    other demuxer allowed inside it, and an MP4's external data references never followed."""
    options = ["-f", container.demuxer, "-protocol_whitelist", "file", "-format_whitelist", container.demuxer]
    if container.demuxer == "mov":
        options += ["-enable_drefs", "0"]
    return tuple(options)
