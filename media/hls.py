"""HLS playlists, and fetching HTTP(S) sources (MP4 files, HLS streams) through the outbound URL guard.

A source playlist is untrusted text, and ffmpeg never reads it. The engine:

- **vets** the bytes before any parser sees them (``vet_text``): UTF-8, at most ``PLAYLIST_MAX_BYTES``
  and ``PLAYLIST_MAX_LINES``, no control character anywhere (RFC 8216 §4.1 forbids them; ffmpeg
  ends a line at a NUL, Python's ``splitlines`` at other characters, so any of them could make the
  two read different lines);
- **parses** it with the ``m3u8`` package into a model that keeps only what the engine needs, from an
  allow-list: variants with their bandwidth; segments with duration, URI, byte range, program
  date-time; ``EXT-X-KEY`` with METHOD ``NONE`` or ``AES-128`` and an IV of ``0x`` + 32 hex digits;
  ``EXT-X-MAP``; target duration, media sequence, end list. Anything else is dropped or refused;
- **fetches** every URI itself (``StorageFetcher``: inside the client's storage area, relative paths
  only; ``HttpFetcher``: http(s) through ``taskengine_site.outbound.request``) into the job's work
  directory under names it makes, **decrypts** AES-128 segments there, and **sniffs** every file
  (``media.containers``), refusing one that is not the media container it must be;
- **writes** the playlist ffmpeg reads from that model alone: no key, no URI but its own file names.

A master playlist may only lead to media playlists (one level, no recursion). ffmpeg is never handed a
client's URL: it would connect wherever the URL (or a redirect, or a DNS answer) points, past the guard
that keeps the engine off its own network. Large files are fetched in ranges, so no response is held
in memory whole.

The same parser reads the playlists ffmpeg writes for the engine (``parse_master``, ``parse_media``).
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import m3u8
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from jobs.workflows.registry import PermanentError, StepContext, TransientError
from media import containers
from media import storage as media_storage
from taskengine_site import outbound
from taskengine_site.outbound import OutboundResponse, redact

# Bytes asked for per ranged request, and the most a single source file may have.
CHUNK_BYTES = 8 * 1024 * 1024
MAX_SOURCE_BYTES = 50 * 1024 * 1024 * 1024
# Bounds on one playlist: its size, its lines, its segments and its distinct EXT-X-KEY tags (the
# parser compares each new key tag with every earlier one, so their number must stay small).
PLAYLIST_MAX_BYTES = 4 * 1024 * 1024
PLAYLIST_MAX_LINES = 200_000
PLAYLIST_MAX_SEGMENTS = 50_000
PLAYLIST_MAX_KEYS = 1_000
MAX_URI_CHARS = 4096
# A segment or a target duration longer than a day is not a segment.
MAX_SEGMENT_SECONDS = 86_400.0
KEY_METHODS = ("NONE", "AES-128")
KEY_BYTES = 16
REQUEST_TIMEOUT = (5.0, 30.0)
REQUEST_DEADLINE = 300.0
RETRY_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0)

Resolver = Callable[[str, str], str]

# C0 and C1 control characters except LF (a CR is allowed only in a CRLF line end, turned into LF
# first), and the separators Python's str.splitlines also splits on.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_IV = re.compile(r"0[xX][0-9a-fA-F]{32}")
_RESOLUTION = re.compile(r"[1-9][0-9]{0,5}x[1-9][0-9]{0,5}")
_CODECS = re.compile(r"[A-Za-z0-9.,+ -]{1,200}")
_GROUP = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BYTERANGE = re.compile(r"([0-9]{1,15})(?:@([0-9]{1,15}))?")
_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attribute_pairs(text: str) -> list[tuple[str, str]]:
    """An attribute list's ``(NAME, value)`` pairs in order, quoted values keeping their quotes.

    For attribute lists the engine itself wrote (``Variant.attributes``), never for a source's text.
    """
    return [(key, value) for key, value in _ATTRIBUTE.findall(text)]


# --- the model ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    length: int
    offset: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class Key:
    """An AES-128 key (METHOD NONE is no key): where it is, and the IV if the playlist gives one."""

    uri: str
    iv: bytes | None  # None: the segment's media sequence number is the IV (RFC 8216 §5.2)


@dataclass(frozen=True)
class InitSection:
    uri: str
    byterange: ByteRange | None = None


@dataclass
class Segment:
    uri: str
    duration: float
    start: float  # seconds from the start of the playlist
    program_date_time: datetime | None = None
    key: Key | None = None
    init: InitSection | None = None
    byterange: ByteRange | None = None
    sequence: int = 0  # the media sequence number


@dataclass
class MediaPlaylist:
    segments: list[Segment] = field(default_factory=list)
    target_duration: float = 0.0
    ended: bool = False

    @property
    def duration(self) -> float:
        return sum(segment.duration for segment in self.segments)


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int
    # The variant's allow-listed attributes, written out again by the engine (never the source's text).
    attributes: str


# --- vetting and parsing ------------------------------------------------------------------------------


def vet_text(data: bytes | str, origin: str) -> str:
    """The text of a playlist, refused (``PermanentError``) unless it is safe to parse.

    UTF-8 (a leading byte-order mark is dropped), at most ``PLAYLIST_MAX_BYTES`` and
    ``PLAYLIST_MAX_LINES``, no control character anywhere (CRLF line ends become LF), starting with
    ``#EXTM3U``, at most ``PLAYLIST_MAX_SEGMENTS`` segments and ``PLAYLIST_MAX_KEYS`` distinct
    ``EXT-X-KEY`` tags. Every check is linear in the size, so a hostile playlist is refused as fast
    as it is read.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    if len(data) > PLAYLIST_MAX_BYTES:
        raise PermanentError(f"playlist {origin} is larger than {PLAYLIST_MAX_BYTES} bytes: refused")
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentError(f"playlist {origin} is not UTF-8 (byte {exc.start}): refused") from None
    text = text.replace("\r\n", "\n")
    lines = text.count("\n") + 1
    if lines > PLAYLIST_MAX_LINES:
        raise PermanentError(f"playlist {origin} has {lines} lines, more than {PLAYLIST_MAX_LINES}: refused")
    bad = _CONTROL.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise PermanentError(
            f"playlist {origin} holds control character U+{ord(bad.group()):04X} on line {line} "
            "(a playlist may hold none): refused"
        )
    if not text.lstrip().startswith("#EXTM3U"):
        raise PermanentError(f"playlist {origin} is not an HLS playlist (no #EXTM3U): refused")
    tags = [line.strip() for line in text.split("\n") if line.lstrip().startswith("#EXT")]
    segments = sum(1 for tag in tags if tag.startswith("#EXTINF"))
    if segments > PLAYLIST_MAX_SEGMENTS:
        raise PermanentError(
            f"playlist {origin} has {segments} segments, more than {PLAYLIST_MAX_SEGMENTS}: refused"
        )
    keys = {tag for tag in tags if tag.startswith("#EXT-X-KEY")}
    if len(keys) > PLAYLIST_MAX_KEYS:
        raise PermanentError(
            f"playlist {origin} has {len(keys)} different EXT-X-KEY tags, more than "
            f"{PLAYLIST_MAX_KEYS}: refused"
        )
    return text


# What the parser raises on malformed input (a number that is not one, a missing part).
_PARSER_ERRORS = (
    m3u8.ParseError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    ArithmeticError,
)


def _parse(text: str, origin: str) -> dict[str, Any]:
    """The ``m3u8`` parser's reading of vetted ``text``; its failures become one clear refusal."""
    try:
        data: dict[str, Any] = m3u8.parse(text)
    except _PARSER_ERRORS as exc:
        reason = str(exc)[:200] or type(exc).__name__
        raise PermanentError(f"playlist {origin} is not a valid HLS playlist ({reason}): refused") from None
    return data


class _Reader:
    """Builds the model from the parser's output: ``base`` resolves URIs (through ``resolve``, which
    refuses one its fetcher would not follow), ``origin`` names the playlist in messages."""

    def __init__(self, base: str, resolve: Resolver, origin: str) -> None:
        self.base, self.resolve, self.origin = base, resolve, origin
        # A key URI is usually repeated with every key tag: each distinct one is resolved once.
        self.resolved: dict[str, str] = {}
        self.keys: dict[tuple[tuple[str, Any], ...], Key | None] = {}

    def refuse(self, reason: str) -> PermanentError:
        return PermanentError(f"playlist {self.origin}: {reason}: refused")

    def uri(self, raw: Any, what: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise self.refuse(f"{what} has no URI")
        if len(raw) > MAX_URI_CHARS:
            raise self.refuse(f"{what} has a URI longer than {MAX_URI_CHARS} characters")
        if raw not in self.resolved:
            self.resolved[raw] = self.resolve(self.base, raw.strip())
        return self.resolved[raw]

    def byterange(self, raw: Any, previous_end: int | None) -> ByteRange:
        """``n[@o]``; without ``o`` the range follows the previous one of the same resource."""
        match = _BYTERANGE.fullmatch(str(raw).strip())
        if match is None:
            raise self.refuse(f"byte range {str(raw)[:40]!r} is not length[@offset]")
        length = int(match.group(1))
        if match.group(2) is not None:
            offset = int(match.group(2))
        elif previous_end is not None:
            offset = previous_end
        else:
            raise self.refuse("a byte range without an offset follows no other range of its file")
        if not 0 < length <= MAX_SOURCE_BYTES:
            raise self.refuse(f"byte range length {length} is out of bounds")
        return ByteRange(length, offset)

    def key(self, raw: dict[str, Any]) -> Key | None:
        """The key a tag names (None for METHOD=NONE); the same attributes are vetted once."""
        attributes = tuple(sorted(raw.items()))
        if attributes not in self.keys:
            self.keys[attributes] = self._key(raw)
        return self.keys[attributes]

    def _key(self, raw: dict[str, Any]) -> Key | None:
        method = raw.get("method")
        if method not in KEY_METHODS:
            shown = str(method)[:40] if method is not None else "(none)"
            raise self.refuse(
                f"EXT-X-KEY METHOD={shown} is not supported (only NONE and AES-128; SAMPLE-AES and other "
                "DRM streams cannot be read)"
            )
        if method == "NONE":
            return None
        keyformat = raw.get("keyformat", "identity")
        if keyformat != "identity":
            raise self.refuse(f"EXT-X-KEY KEYFORMAT={str(keyformat)[:40]} is not supported (only identity)")
        iv = raw.get("iv")
        if iv is not None and not (isinstance(iv, str) and _IV.fullmatch(iv)):
            raise self.refuse(f"EXT-X-KEY IV {str(iv)[:40]!r} is not 0x followed by 32 hex digits")
        uri = self.uri(raw.get("uri"), "an AES-128 EXT-X-KEY")
        return Key(uri=uri, iv=bytes.fromhex(iv[2:]) if iv else None)

    def seconds(self, value: Any, what: str) -> float:
        seconds = float(value)
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SEGMENT_SECONDS:
            raise self.refuse(f"{what} {str(value)[:40]} is out of bounds")
        return seconds

    def variant(self, raw: dict[str, Any]) -> Variant:
        info = raw.get("stream_info") or {}
        bandwidth = int(info.get("bandwidth") or 0)
        if bandwidth < 0:
            raise self.refuse("a variant's BANDWIDTH is negative")
        # Only attributes of a known shape are kept, and written out in one canonical form.
        parts = [f"BANDWIDTH={bandwidth}"]
        average = info.get("average_bandwidth")
        if isinstance(average, int) and average >= 0:
            parts.append(f"AVERAGE-BANDWIDTH={average}")
        resolution = info.get("resolution")
        if isinstance(resolution, str) and _RESOLUTION.fullmatch(resolution):
            parts.append(f"RESOLUTION={resolution}")
        rate = info.get("frame_rate")
        if isinstance(rate, float) and math.isfinite(rate) and 0 < rate <= 1000:
            parts.append(f"FRAME-RATE={rate:.3f}")
        codecs = info.get("codecs")
        if isinstance(codecs, str) and _CODECS.fullmatch(codecs):
            parts.append(f'CODECS="{codecs}"')
        audio = info.get("audio")
        if isinstance(audio, str) and _GROUP.fullmatch(audio):
            parts.append(f'AUDIO="{audio}"')
        uri = self.uri(raw.get("uri"), "a variant")
        return Variant(uri=uri, bandwidth=bandwidth, attributes=",".join(parts))

    def media(self, data: dict[str, Any]) -> MediaPlaylist:
        raw_segments = data.get("segments") or []
        if len(raw_segments) > PLAYLIST_MAX_SEGMENTS:
            raise self.refuse(f"{len(raw_segments)} segments, more than {PLAYLIST_MAX_SEGMENTS}")
        playlist = MediaPlaylist(
            target_duration=self.seconds(data.get("targetduration") or 0, "target duration"),
            ended=bool(data.get("is_endlist")),
        )
        sequence = int(data.get("media_sequence") or 0)
        if sequence < 0:
            raise self.refuse("the media sequence is negative")
        # Every key tag is vetted, also one that applies to no segment.
        for raw_key in data.get("keys") or []:
            if raw_key:
                self.key(raw_key)
        # The parser shares one dict between the segments an EXT-X-MAP applies to: each is read once.
        inits: dict[int, InitSection] = {}
        range_ends: dict[str, int] = {}
        offset = 0.0
        for index, raw in enumerate(raw_segments):
            if "duration" not in raw:
                raise self.refuse(f"segment {index} has no #EXTINF duration")
            duration = self.seconds(raw["duration"], f"segment {index} duration")
            uri = self.uri(raw.get("uri"), f"segment {index}")
            byterange = None
            if raw.get("byterange") is not None:
                byterange = self.byterange(raw["byterange"], range_ends.get(uri))
                range_ends[uri] = byterange.end
            raw_key = raw.get("key")
            key = self.key(raw_key) if raw_key else None
            init = None
            raw_init = raw.get("init_section")
            if raw_init:
                if id(raw_init) not in inits:
                    init_range = raw_init.get("byterange")
                    inits[id(raw_init)] = InitSection(
                        self.uri(raw_init.get("uri"), "an EXT-X-MAP"),
                        self.byterange(init_range, 0) if init_range is not None else None,
                    )
                init = inits[id(raw_init)]
            moment = raw.get("current_program_date_time")
            if isinstance(moment, datetime) and moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            playlist.segments.append(
                Segment(
                    uri=uri,
                    duration=duration,
                    start=offset,
                    program_date_time=moment if isinstance(moment, datetime) else None,
                    key=key,
                    init=init,
                    byterange=byterange,
                    sequence=sequence + index,
                )
            )
            offset += duration
        return playlist


def parse_playlist(
    text: str, base_url: str = "", resolve: Resolver = urljoin, *, origin: str | None = None
) -> list[Variant] | MediaPlaylist:
    """A master playlist's variants, or a media playlist's model; ``PermanentError`` for anything
    outside the allow-list (see the module's docstring). ``resolve(base_url, uri)`` makes each URI
    absolute and refuses one its fetcher would not follow; ``origin`` names the playlist in messages
    (``base_url`` unless given: a URL's query may hold a token)."""
    origin = origin or base_url or "(playlist)"
    data = _parse(vet_text(text, origin), origin)
    reader = _Reader(base_url, resolve, origin)
    if data.get("is_variant"):
        if data.get("segments"):
            raise reader.refuse("it mixes variants and segments")
        variants = [reader.variant(raw) for raw in data.get("playlists") or []]
        if not variants:
            raise reader.refuse("a master playlist that names no variant playlist")
        return variants
    return reader.media(data)


def parse_master(text: str, base_url: str = "", resolve: Resolver = urljoin) -> list[Variant]:
    """The variants of a master playlist (empty for a media playlist)."""
    parsed = parse_playlist(text, base_url, resolve)
    return parsed if isinstance(parsed, list) else []


def parse_media(text: str, base_url: str = "", resolve: Resolver = urljoin) -> MediaPlaylist:
    """Segments of a media playlist with their start offsets, keys, init sections and date-times."""
    parsed = parse_playlist(text, base_url, resolve)
    if isinstance(parsed, list):
        origin = base_url or "(playlist)"
        raise PermanentError(f"playlist {origin} is a master playlist, not a media playlist")
    return parsed


# --- fetching over HTTP -------------------------------------------------------------------------------


def _sleep_with_heartbeat(ctx: StepContext | None, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(0.25, remaining))
        if ctx is not None:
            ctx.heartbeat()


def _request(
    url: str, headers: dict[str, str], max_bytes: int, retries: int, ctx: StepContext | None
) -> OutboundResponse:
    """One guarded GET, retried ``retries`` times on network errors and 5xx/429 answers."""
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            _sleep_with_heartbeat(
                ctx, RETRY_BACKOFF_SECONDS[min(attempt - 1, len(RETRY_BACKOFF_SECONDS) - 1)]
            )
        try:
            response = outbound.request(
                "GET",
                url,
                headers=headers,
                timeout=REQUEST_TIMEOUT,
                max_bytes=max_bytes,
                allow_redirects=True,
                deadline=REQUEST_DEADLINE,
            )
        except outbound.UrlRefused as exc:
            raise PermanentError(f"source {outbound.redact(url)}: {exc.message}") from None
        except outbound.OutboundError as exc:
            last = str(exc)
            continue
        if response.status_code >= 500 or response.status_code == 429:
            last = f"HTTP {response.status_code}"
            continue
        if response.status_code >= 400:
            raise PermanentError(f"source {outbound.redact(url)} answered HTTP {response.status_code}")
        return response
    raise TransientError(f"source {outbound.redact(url)}: {last} (after {retries + 1} attempts)")


def fetch_bytes(
    url: str, *, retries: int, ctx: StepContext | None, max_bytes: int = PLAYLIST_MAX_BYTES
) -> bytes:
    """A small resource (a playlist, a key) in memory; refuses one larger than ``max_bytes``."""
    response = _request(url, {}, max_bytes, retries, ctx)
    if response.truncated:
        raise PermanentError(f"{redact(url)} is larger than {max_bytes} bytes")
    return bytes(response.content)


def fetch_file(
    url: str,
    target: Path,
    *,
    retries: int,
    ctx: StepContext | None,
    byterange: ByteRange | None = None,
) -> Path:
    """Download ``url`` (or only its ``byterange``) to ``target`` in ranges of ``CHUNK_BYTES``.

    A server ignoring ranges is fine for a whole file; for a byte range it must answer them, unless
    the whole file fits in one answer.
    """
    shown = redact(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial")
    first = byterange.offset if byterange else 0
    stop = byterange.end if byterange else None  # exclusive
    with partial.open("wb") as out:
        position = first
        while stop is None or position < stop:
            end = position + CHUNK_BYTES - 1 if stop is None else min(position + CHUNK_BYTES, stop) - 1
            response = _request(url, {"Range": f"bytes={position}-{end}"}, CHUNK_BYTES, retries, ctx)
            if response.status_code == 200:
                # The server sent the whole file: it must fit in one answer.
                if byterange is not None:
                    if response.truncated:
                        raise PermanentError(f"{shown} does not answer byte-range requests")
                    out.write(response.content[byterange.offset : byterange.end])
                    position = min(len(response.content), byterange.end)
                    break
                if response.truncated:
                    full = _request(url, {}, MAX_SOURCE_BYTES, retries, ctx)
                    out.seek(0)
                    out.truncate()
                    out.write(full.content)
                else:
                    out.write(response.content)
                break
            if response.status_code == 416:
                break
            if response.status_code != 206:
                raise PermanentError(f"{shown} answered HTTP {response.status_code}")
            # Never more than was asked for, whatever the server sends.
            content = response.content[: end - position + 1]
            out.write(content)
            position += len(content)
            total = _total_size(response.headers.get("Content-Range", ""))
            if ctx is not None:
                ctx.heartbeat()
            if not content or (total is not None and position >= total):
                break
            if position - first > MAX_SOURCE_BYTES:
                raise PermanentError(f"{shown} is larger than {MAX_SOURCE_BYTES} bytes")
    if byterange is not None and position != byterange.end:
        raise PermanentError(f"{shown} is shorter than the byte range {byterange.length}@{byterange.offset}")
    partial.replace(target)
    return target


def _total_size(content_range: str) -> int | None:
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None


# --- fetchers: where a stream's resources come from ---------------------------------------------------


class HttpFetcher:
    """Reads an HLS stream's resources over HTTP(S) through the outbound guard. A playlist may name
    http(s) URLs only (relative ones are resolved against it); any other scheme is refused."""

    def __init__(self, *, retries: int, ctx: StepContext | None) -> None:
        self.retries, self.ctx = retries, ctx

    def resolve(self, base: str, uri: str) -> str:
        resolved = urljoin(base, uri)
        if urlsplit(resolved).scheme.lower() not in ("http", "https"):
            raise PermanentError(
                f"playlist {redact(base)} names {uri[:80]!r}: only http(s) URLs are allowed: refused"
            )
        return resolved

    def describe(self, uri: str) -> str:
        return redact(uri)

    def read(self, uri: str, max_bytes: int = PLAYLIST_MAX_BYTES) -> bytes:
        return fetch_bytes(uri, retries=self.retries, ctx=self.ctx, max_bytes=max_bytes)

    def save(self, uri: str, target: Path) -> None:
        fetch_file(uri, target, retries=self.retries, ctx=self.ctx)

    def save_range(self, uri: str, target: Path, byterange: ByteRange, scratch: Path) -> None:
        fetch_file(uri, target, retries=self.retries, ctx=self.ctx, byterange=byterange)


class StorageFetcher:
    """Reads an HLS stream's resources from a storage. A playlist may only name files in the same
    storage, by relative path: a URL, an absolute path or a way out of the storage is refused, so a
    playlist a client uploaded cannot make the engine read anything else."""

    def __init__(self, storage: media_storage.Storage) -> None:
        self.storage = storage
        self._whole: dict[str, Path] = {}

    def resolve(self, base: str, uri: str) -> str:
        if not uri or ":" in uri or uri.startswith(("/", "\\")):
            raise PermanentError(f"playlist {base} names {uri[:80]!r}: only relative paths are allowed")
        try:
            return media_storage.normalise_key(
                posixpath.normpath(posixpath.join(posixpath.dirname(base), uri))
            )
        except PermanentError as exc:
            raise PermanentError(f"playlist {base} names {uri[:80]!r}: {exc}") from None

    def describe(self, uri: str) -> str:
        return uri

    def read(self, uri: str, max_bytes: int = PLAYLIST_MAX_BYTES) -> bytes:
        size = self.storage.size(uri)
        if size is None:
            raise PermanentError(f"{uri} does not exist in {self.storage.kind} storage")
        if size > max_bytes:
            raise PermanentError(f"{uri} is larger than {max_bytes} bytes")
        return self.storage.read_bytes(uri)

    def save(self, uri: str, target: Path) -> None:
        media_storage.stage(self.storage, uri, target)

    def save_range(self, uri: str, target: Path, byterange: ByteRange, scratch: Path) -> None:
        """Stage the whole file once (into ``scratch``), then copy the range out of it."""
        if uri not in self._whole:
            self._whole[uri] = media_storage.stage(
                self.storage, uri, scratch / f"resource{len(self._whole):04d}"
            )
        whole = self._whole[uri]
        if byterange.end > whole.stat().st_size:
            shown = f"{byterange.length}@{byterange.offset}"
            raise PermanentError(f"{uri} is shorter than the byte range {shown}")
        with whole.open("rb") as source, target.open("wb") as out:
            source.seek(byterange.offset)
            remaining = byterange.length
            while remaining:
                chunk = source.read(min(remaining, 1 << 20))
                out.write(chunk)
                remaining -= len(chunk)


Fetcher = HttpFetcher | StorageFetcher


def read_playlist(fetcher: Fetcher, uri: str) -> list[Variant] | MediaPlaylist:
    """The playlist at ``uri``, fetched (bounded by ``PLAYLIST_MAX_BYTES``), vetted and parsed."""
    origin = fetcher.describe(uri)
    return parse_playlist(vet_text(fetcher.read(uri), origin), uri, fetcher.resolve, origin=origin)


def load_media_playlist(url: str, fetcher: Fetcher) -> tuple[str, MediaPlaylist]:
    """The media playlist at ``url``, or behind the master playlist there (its highest-bandwidth
    variant); with its URI. A master may only lead to a media playlist: one naming itself, or another
    master, is refused, so there is never more than one level to follow."""
    parsed = read_playlist(fetcher, url)
    if isinstance(parsed, MediaPlaylist):
        return url, parsed
    best = max(parsed, key=lambda variant: variant.bandwidth)
    if best.uri == url:
        raise PermanentError(f"master playlist {fetcher.describe(url)} names itself as a variant: refused")
    variant = read_playlist(fetcher, best.uri)
    if not isinstance(variant, MediaPlaylist):
        raise PermanentError(
            f"variant {fetcher.describe(best.uri)} of master playlist {fetcher.describe(url)} is itself a "
            "master playlist (a master may only lead to media playlists): refused"
        )
    return best.uri, variant


# --- staging a stream for ffmpeg ----------------------------------------------------------------------


@dataclass
class FetchedStream:
    """A local copy of (part of) an HLS stream: a playlist ffmpeg can read, and where it starts."""

    playlist: Path
    # Seconds of the source stream before the first fetched segment (subtract from clip offsets).
    offset: float
    program_date_time: datetime | None
    duration: float


def _decrypt(source: Path, target: Path, key: bytes, iv: bytes, what: str) -> None:
    """AES-128-CBC with PKCS#7 padding, as HLS encrypts whole segments, streamed file to file."""
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        with source.open("rb") as stream, target.open("wb") as out:
            while chunk := stream.read(1 << 20):
                out.write(unpadder.update(decryptor.update(chunk)))
            out.write(unpadder.update(decryptor.finalize()) + unpadder.finalize())
    except ValueError:
        raise PermanentError(f"{what} does not decrypt with its AES-128 key: refused") from None


class _Stager:
    """Fetches a stream's keys, init sections and segments into one folder under names it makes."""

    def __init__(self, fetcher: Fetcher, target: Path) -> None:
        self.fetcher, self.target = fetcher, target
        self.scratch = target / "resources"
        self.keys: dict[str, bytes] = {}
        self.inits: dict[InitSection, str] = {}

    def key(self, key: Key) -> bytes:
        if key.uri not in self.keys:
            data = self.fetcher.read(key.uri, max_bytes=KEY_BYTES)
            if len(data) != KEY_BYTES:
                shown = self.fetcher.describe(key.uri)
                raise PermanentError(f"AES-128 key {shown} is {len(data)} bytes, not {KEY_BYTES}: refused")
            self.keys[key.uri] = data
        return self.keys[key.uri]

    def fetch(
        self,
        uri: str,
        byterange: ByteRange | None,
        stem: str,
        allowed: tuple[containers.Container, ...],
        what: str,
        decrypt: tuple[bytes, bytes] | None = None,
    ) -> tuple[str, containers.Container]:
        """Stage ``uri`` (its ``byterange``), decrypt it, sniff it: the file name made, its container."""
        download = self.target / f"{stem}.download"
        if byterange is not None:
            self.scratch.mkdir(exist_ok=True)
            self.fetcher.save_range(uri, download, byterange, self.scratch)
        else:
            self.fetcher.save(uri, download)
        label = f"{what} {self.fetcher.describe(uri)}"
        if decrypt is not None:
            clear = self.target / f"{stem}.clear"
            _decrypt(download, clear, *decrypt, what=label)
            download.unlink()
            download = clear
        try:
            found = containers.require(download, allowed, label)
        except PermanentError:
            download.unlink(missing_ok=True)
            raise
        name = f"{stem}{found.suffix}"
        os.replace(download, self.target / name)
        return name, found

    def init(self, init: InitSection) -> str:
        if init not in self.inits:
            # ffmpeg reads init sections in the clear whatever key is in force, and so does the engine.
            name, _ = self.fetch(
                init.uri, init.byterange, f"init{len(self.inits)}", containers.INIT_CONTAINERS, "init section"
            )
            self.inits[init] = name
        return self.inits[init]

    def segment(self, segment: Segment, index: int) -> tuple[str, containers.Container]:
        decrypt = None
        if segment.key is not None:
            iv = segment.key.iv or segment.sequence.to_bytes(16, "big")
            decrypt = (self.key(segment.key), iv)
        return self.fetch(
            segment.uri,
            segment.byterange,
            f"segment{index:05d}",
            containers.SEGMENT_CONTAINERS,
            f"segment {segment.sequence}",
            decrypt,
        )


def fetch_hls(
    url: str,
    target: Path,
    fetcher: Fetcher,
    *,
    start: float | datetime | None = None,
    end: float | datetime | None = None,
) -> FetchedStream:
    """Fetch the segments of the HLS stream at ``url`` that overlap ``[start, end]`` into ``target``.

    ``fetcher`` reads from HTTP(S) through the guard or from a storage. A master playlist's
    highest-bandwidth variant is used. Bounds are offsets in seconds or, for a live stream with
    ``#EXT-X-PROGRAM-DATE-TIME``, wall-clock date-times.

    Init sections and segments are staged as ``init<n>`` and ``segment<nnnnn>`` with the suffix of
    the container they hold (``.ts``, ``.mp4``, ``.aac``), AES-128 segments decrypted. The local
    playlist ``index.m3u8`` is written from the model alone: it names only those files and holds no
    key, so ffmpeg needs neither the ``crypto`` protocol nor any file but these.
    """
    target.mkdir(parents=True, exist_ok=True)
    url, playlist = load_media_playlist(url, fetcher)
    if not playlist.segments:
        raise PermanentError(f"the HLS stream at {fetcher.describe(url)} has no segments")
    chosen = [segment for segment in playlist.segments if _overlaps(segment, start, end)]
    if not chosen:
        raise PermanentError("no segment of the HLS stream covers the clip")
    longest = max(segment.duration for segment in chosen)
    target_duration = math.ceil(max(playlist.target_duration, longest))
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{target_duration}"]
    lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    stager = _Stager(fetcher, target)
    current_init: str | None = None
    kinds: set[containers.Container] = set()
    for index, segment in enumerate(chosen):
        if segment.init is not None:
            name = stager.init(segment.init)
            if name != current_init:
                lines.append(f'#EXT-X-MAP:URI="{name}"')
                current_init = name
        name, kind = stager.segment(segment, index)
        kinds.add(kind)
        if len(kinds) > 1:
            raise PermanentError(
                f"the HLS stream at {fetcher.describe(url)} mixes {' and '.join(k.name for k in kinds)} "
                "segments: refused"
            )
        lines.append(f"#EXTINF:{segment.duration:.6f},")
        lines.append(name)
    lines.append("#EXT-X-ENDLIST")
    shutil.rmtree(stager.scratch, ignore_errors=True)
    local = target / "index.m3u8"
    local.write_text("\n".join(lines) + "\n")
    first = chosen[0]
    return FetchedStream(
        playlist=local,
        offset=first.start,
        program_date_time=first.program_date_time,
        duration=sum(segment.duration for segment in chosen),
    )


def _overlaps(segment: Segment, start: float | datetime | None, end: float | datetime | None) -> bool:
    if start is None or end is None:
        return True
    if isinstance(start, datetime) and isinstance(end, datetime):
        if segment.program_date_time is None:
            raise PermanentError("date-time clip bounds need a stream with #EXT-X-PROGRAM-DATE-TIME")
        seg_start = segment.program_date_time
        seg_end = seg_start + timedelta(seconds=segment.duration)
        return seg_end > start and seg_start < end
    assert isinstance(start, float) and isinstance(end, float)
    return segment.start + segment.duration > start and segment.start < end
