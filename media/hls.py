"""HLS playlists, and fetching HTTP(S) sources (MP4 files, HLS streams) through the outbound URL guard.

ffmpeg is never handed a client's URL: it would connect wherever the URL (or a redirect, or a DNS
answer) points, past the guard that keeps the engine off its own network. Instead every playlist, key
and segment is fetched with ``taskengine_site.outbound.request`` into the work directory and ffmpeg
reads local files. Large files are fetched in ranges, so no response is held in memory whole.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin

from jobs.workflows.registry import PermanentError, StepContext, TransientError
from media import storage as media_storage
from taskengine_site.outbound import OutboundResponse

# Bytes asked for per ranged request, and the most a single source file may have.
CHUNK_BYTES = 8 * 1024 * 1024
MAX_SOURCE_BYTES = 50 * 1024 * 1024 * 1024
PLAYLIST_MAX_BYTES = 4 * 1024 * 1024
REQUEST_TIMEOUT = (5.0, 30.0)
REQUEST_DEADLINE = 300.0
RETRY_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0)

Resolver = Callable[[str, str], str]

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attribute_pairs(text: str) -> list[tuple[str, str]]:
    """An attribute list's ``(NAME, value)`` pairs in order, quoted values keeping their quotes."""
    return [(key, value) for key, value in _ATTRIBUTE.findall(text)]


def _attributes(text: str) -> dict[str, str]:
    return {key: value.strip('"') for key, value in attribute_pairs(text)}


@dataclass
class Segment:
    uri: str
    duration: float
    start: float  # seconds from the start of the playlist
    program_date_time: datetime | None = None
    key: dict[str, str] | None = None
    map_uri: str | None = None


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
    attributes: str


def parse_master(text: str, base_url: str = "", resolve: Resolver = urljoin) -> list[Variant]:
    """The variants of a master playlist (empty for a media playlist)."""
    variants = []
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            attributes = line.split(":", 1)[1]
            uri = next((item for item in lines[index + 1 :] if item and not item.startswith("#")), None)
            if uri:
                bandwidth = int(_attributes(attributes).get("BANDWIDTH", "0") or 0)
                variants.append(Variant(resolve(base_url, uri), bandwidth, attributes))
    return variants


def parse_media(text: str, base_url: str = "", resolve: Resolver = urljoin) -> MediaPlaylist:
    """Segments of a media playlist with their start offsets, keys, init sections and date-times."""
    if not text.lstrip().startswith("#EXTM3U"):
        raise PermanentError("not an HLS playlist (no #EXTM3U)")
    playlist = MediaPlaylist()
    duration: float | None = None
    key: dict[str, str] | None = None
    map_uri: str | None = None
    moment: datetime | None = None
    offset = 0.0
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0] or 0)
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            playlist.target_duration = float(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-KEY:"):
            attributes = _attributes(line.split(":", 1)[1])
            if attributes.get("METHOD", "NONE") == "NONE":
                key = None
            else:
                if "URI" in attributes:
                    attributes["URI"] = resolve(base_url, attributes["URI"])
                key = attributes
        elif line.startswith("#EXT-X-MAP:"):
            uri = _attributes(line.split(":", 1)[1]).get("URI")
            map_uri = resolve(base_url, uri) if uri else None
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            moment = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00"))
        elif line == "#EXT-X-ENDLIST":
            playlist.ended = True
        elif line and not line.startswith("#"):
            length = duration if duration is not None else playlist.target_duration
            playlist.segments.append(Segment(resolve(base_url, line), length, offset, moment, key, map_uri))
            offset += length
            moment = moment + timedelta(seconds=length) if moment else None
            duration = None
    return playlist


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
    from taskengine_site import outbound

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
        raise PermanentError(f"{url} is larger than {max_bytes} bytes")
    return bytes(response.content)


def fetch_file(url: str, target: Path, *, retries: int, ctx: StepContext | None) -> Path:
    """Download ``url`` to ``target`` in ranges of ``CHUNK_BYTES`` (a server ignoring ranges is fine)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial")
    with partial.open("wb") as out:
        position = 0
        while True:
            end = position + CHUNK_BYTES - 1
            response = _request(url, {"Range": f"bytes={position}-{end}"}, CHUNK_BYTES, retries, ctx)
            if response.status_code == 200:
                # The server sent the whole file: it must fit in one answer.
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
                raise PermanentError(f"{url} answered HTTP {response.status_code}")
            out.write(response.content)
            position += len(response.content)
            total = _total_size(response.headers.get("Content-Range", ""))
            if ctx is not None:
                ctx.heartbeat()
            if not response.content or (total is not None and position >= total):
                break
            if position > MAX_SOURCE_BYTES:
                raise PermanentError(f"{url} is larger than {MAX_SOURCE_BYTES} bytes")
    partial.replace(target)
    return target


def _total_size(content_range: str) -> int | None:
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None


class HttpFetcher:
    """Reads an HLS stream's resources over HTTP(S) through the outbound guard."""

    def __init__(self, *, retries: int, ctx: StepContext | None) -> None:
        self.retries, self.ctx = retries, ctx

    def resolve(self, base: str, uri: str) -> str:
        return urljoin(base, uri)

    def read(self, uri: str, max_bytes: int = PLAYLIST_MAX_BYTES) -> bytes:
        return fetch_bytes(uri, retries=self.retries, ctx=self.ctx, max_bytes=max_bytes)

    def save(self, uri: str, target: Path) -> None:
        fetch_file(uri, target, retries=self.retries, ctx=self.ctx)


class StorageFetcher:
    """Reads an HLS stream's resources from a storage. A playlist may only name files in the same
    storage, by relative path: a URL, an absolute path or a way out of the storage is refused, so a
    playlist a client uploaded cannot make ffmpeg read anything else."""

    def __init__(self, storage: media_storage.Storage) -> None:
        self.storage = storage

    def resolve(self, base: str, uri: str) -> str:
        if not uri or ":" in uri or uri.startswith(("/", "\\")):
            raise PermanentError(f"playlist {base} names {uri!r}: only relative paths are allowed")
        return media_storage.normalise_key(posixpath.normpath(posixpath.join(posixpath.dirname(base), uri)))

    def read(self, uri: str, max_bytes: int = PLAYLIST_MAX_BYTES) -> bytes:
        size = self.storage.size(uri)
        if size is None:
            raise PermanentError(f"{uri} does not exist in {self.storage.kind} storage")
        if size > max_bytes:
            raise PermanentError(f"{uri} is larger than {max_bytes} bytes")
        return self.storage.read_bytes(uri)

    def save(self, uri: str, target: Path) -> None:
        media_storage.stage(self.storage, uri, target)


Fetcher = HttpFetcher | StorageFetcher


@dataclass
class FetchedStream:
    """A local copy of (part of) an HLS stream: a playlist ffmpeg can read, and where it starts."""

    playlist: Path
    # Seconds of the source stream before the first fetched segment (subtract from clip offsets).
    offset: float
    program_date_time: datetime | None
    duration: float


def fetch_hls(
    url: str,
    target: Path,
    fetcher: Fetcher,
    *,
    start: float | datetime | None = None,
    end: float | datetime | None = None,
) -> FetchedStream:
    """Fetch the segments of the HLS stream at ``url`` that overlap ``[start, end]`` into ``target``.

    ``fetcher`` reads from HTTP(S) through the guard or from a storage. The local playlist written
    names only the local copies, so ffmpeg never follows a URI the source chose.

    A master playlist's highest-bandwidth variant is used. Bounds are offsets in seconds or, for a live
    stream with ``#EXT-X-PROGRAM-DATE-TIME``, wall-clock date-times. Keys and init sections are fetched
    too and the local playlist names the local copies.
    """
    target.mkdir(parents=True, exist_ok=True)
    text = fetcher.read(url).decode("utf-8", errors="replace")
    variants = parse_master(text, url, fetcher.resolve)
    if variants:
        url = max(variants, key=lambda variant: variant.bandwidth).uri
        text = fetcher.read(url).decode("utf-8", errors="replace")
    playlist = parse_media(text, url, fetcher.resolve)
    if not playlist.segments:
        raise PermanentError(f"the HLS stream at {url} has no segments")
    chosen = [segment for segment in playlist.segments if _overlaps(segment, start, end)]
    if not chosen:
        raise PermanentError("no segment of the HLS stream covers the clip")
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{int(playlist.target_duration + 0.999)}"]
    lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    fetched: dict[str, str] = {}
    current_key: str | None = None
    current_map: str | None = None
    for index, segment in enumerate(chosen):
        if segment.key is not None and segment.key.get("URI") and segment.key["URI"] not in fetched:
            name = f"key{len(fetched)}.key"
            (target / name).write_bytes(fetcher.read(segment.key["URI"], max_bytes=64))
            fetched[segment.key["URI"]] = name
        key_line = "#EXT-X-KEY:METHOD=NONE"
        if segment.key is not None:
            key_line = f'#EXT-X-KEY:METHOD={segment.key.get("METHOD")},URI="{fetched[segment.key["URI"]]}"'
            if segment.key.get("IV"):
                key_line += f",IV={segment.key['IV']}"
        if key_line != current_key and (segment.key is not None or current_key is not None):
            lines.append(key_line)
            current_key = key_line
        if segment.map_uri and segment.map_uri != current_map:
            if segment.map_uri not in fetched:
                name = f"init{len(fetched)}.mp4"
                fetcher.save(segment.map_uri, target / name)
                fetched[segment.map_uri] = name
            lines.append(f'#EXT-X-MAP:URI="{fetched[segment.map_uri]}"')
            current_map = segment.map_uri
        suffix = Path(segment.uri.split("?", 1)[0]).suffix or ".ts"
        name = f"segment{index:05d}{suffix if suffix in ('.ts', '.m4s', '.mp4', '.aac') else '.ts'}"
        fetcher.save(segment.uri, target / name)
        lines.append(f"#EXTINF:{segment.duration:.6f},")
        lines.append(name)
    lines.append("#EXT-X-ENDLIST")
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
