"""What the engine does to the packager's output before it is published.

- **Bandwidth from the segments.** Every media playlist's segments are measured (bytes times 8 over their
  EXTINF duration). A variant's ``BANDWIDTH`` is the sum of the peaks of its video and of the largest
  audio and text renditions it may play with, ``AVERAGE-BANDWIDTH`` the same sum of averages. A tail
  segment shorter than half the segment duration is left out of the peak: a few hundredths of a second
  of audio at the end would otherwise claim a rate ten times the real one and push players' ABR down.
- **The HLS master** is written by the engine (version 7): audio groups with ``LANGUAGE``, ``NAME``,
  ``CHANNELS`` and one ``DEFAULT``, subtitles, ``FRAME-RATE``, ``RESOLUTION``, the measured bandwidths,
  and an I-frame playlist per video rendition. CODECS strings come from the packager, which read them
  from the encoded streams.
- **Key tags.** ClearKey has no ``KEYFORMAT`` of its own in HLS; the engine adds the one hls.js reads
  (``org.w3.clearkey``, the key id as its URI: never the key). The packager also writes a
  ``KEYFORMAT="identity"`` tag for the common ("ClearKey") system of a ``cbcs`` output, whose URI is
  not the key the ``identity`` format promises but the key id as ``data:`` (or, beside FairPlay, the
  ``skd://`` URI): a player that believes it takes the key id for the key (Shaka Packager issue 1219,
  https://github.com/shaka-project/shaka-packager/issues/1219). hls.js prefers an
  ``identity`` key to every other (``Fragment.decryptdata``), takes ``SAMPLE-AES`` with it for
  MPEG-TS sample encryption and stops on fMP4 ("The MP4 demuxer does not support SAMPLE-AES
  decryption", a ``fragParsingError``). The engine removes every ``identity`` tag from common
  encryption playlists; ClearKey players use the ``org.w3.clearkey`` tag.
- **AES-128** (MPEG-TS for legacy players): the packager writes clear TS segments and the engine
  encrypts each whole segment (AES-128-CBC, PKCS#7) with the job's key and IV, adding ``EXT-X-KEY`` with
  the client's key URI.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path

import m3u8
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from jobs.workflows.registry import PermanentError
from media.commands import Layout, Plan, Protection

AUDIO_GROUP = "audio"
TEXT_GROUP = "subtitles"
CLEARKEY_FORMAT = "org.w3.clearkey"


@dataclass(frozen=True)
class Bandwidth:
    peak: int
    average: int

    def __add__(self, other: Bandwidth) -> Bandwidth:
        return Bandwidth(self.peak + other.peak, self.average + other.average)


ZERO = Bandwidth(0, 0)


def _load(path: Path) -> m3u8.M3U8:
    try:
        return m3u8.loads(path.read_text(), uri=None)
    except (OSError, ValueError) as exc:
        raise PermanentError(f"the packager's {path.name} cannot be read: {exc}") from None


def measure(out: Path, playlist: str, segment_duration: float) -> Bandwidth:
    """The peak and average bit rate of the segments ``playlist`` (in ``out``) names."""
    parsed = _load(out / playlist)
    rates: list[tuple[float, float]] = []  # (bits, seconds)
    for segment in parsed.segments:
        seconds = float(segment.duration or 0)
        if seconds <= 0:
            continue
        if segment.byterange:
            size = int(str(segment.byterange).split("@", 1)[0])
        else:
            size = (out / str(segment.uri)).stat().st_size
        rates.append((size * 8.0, seconds))
    if not rates:
        return ZERO
    counted = rates
    if len(rates) > 1 and rates[-1][1] < segment_duration / 2:
        counted = rates[:-1]
    peak = max(bits / seconds for bits, seconds in counted)
    average = sum(bits for bits, _ in rates) / sum(seconds for _, seconds in rates)
    return Bandwidth(math.ceil(peak), math.ceil(average))


@dataclass(frozen=True)
class MasterInfo:
    """What the packager's own master says that the engine keeps: codec strings and languages."""

    codecs: dict[str, str]  # playlist URI -> CODECS
    languages: dict[str, str]  # rendition playlist URI -> LANGUAGE as the packager normalised it
    frame_rates: dict[str, float]


def read_packager_master(path: Path) -> MasterInfo:
    parsed = _load(path)
    codecs: dict[str, str] = {}
    frame_rates: dict[str, float] = {}
    for variant in parsed.playlists:
        codecs[str(variant.uri)] = str(variant.stream_info.codecs or "")
        if variant.stream_info.frame_rate:
            frame_rates[str(variant.uri)] = float(variant.stream_info.frame_rate)
    for iframe in parsed.iframe_playlists:
        codecs[str(iframe.uri)] = str(iframe.iframe_stream_info.codecs or "")
    languages = {str(m.uri): str(m.language) for m in parsed.media if m.uri and m.language}
    return MasterInfo(codecs, languages, frame_rates)


def _video_codec(codecs: str) -> str:
    return next((c for c in codecs.split(",") if not c.startswith(("mp4a", "ac-3", "ec-3", "opus"))), codecs)


def _audio_codec(codecs: str) -> str:
    return next((c for c in codecs.split(",") if c.startswith(("mp4a", "ac-3", "ec-3", "opus"))), "")


def _quoted(value: str) -> str:
    if '"' in value or "\n" in value or "\r" in value:
        raise PermanentError(f"internal: {value!r} cannot be an HLS attribute")
    return f'"{value}"'


def write_master(
    out: Path,
    plan: Plan,
    layout: Layout,
    *,
    segment_duration: float,
    fps: float,
    iframes: bool,
) -> tuple[str, list[dict[str, object]]]:
    """The HLS master playlist's text, and per variant what went into it (for the step's result)."""
    packaged = read_packager_master(out / "packager_master.m3u8")
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    audio_bandwidth = ZERO
    audio_codec = ""
    default_audio = next((a for a in plan.audio if a.default), plan.audio[0] if plan.audio else None)
    for audio in plan.audio:
        uri = layout.playlist(audio.key)
        measured = measure(out, uri, segment_duration)
        audio_bandwidth = Bandwidth(
            max(audio_bandwidth.peak, measured.peak), max(audio_bandwidth.average, measured.average)
        )
        attributes = [f"TYPE=AUDIO,GROUP-ID={_quoted(AUDIO_GROUP)}"]
        language = packaged.languages.get(uri, audio.language)
        if language != "und":
            attributes.append(f"LANGUAGE={_quoted(language)}")
        attributes.append(f"NAME={_quoted(audio.name)}")
        attributes.append(f"DEFAULT={'YES' if audio is default_audio else 'NO'},AUTOSELECT=YES")
        attributes.append(f"CHANNELS={_quoted(str(audio.channels))},URI={_quoted(uri)}")
        lines.append("#EXT-X-MEDIA:" + ",".join(attributes))
    text_bandwidth = ZERO
    for text in plan.text:
        uri = layout.playlist(text.key)
        measured = measure(out, uri, segment_duration)
        text_bandwidth = Bandwidth(
            max(text_bandwidth.peak, measured.peak), max(text_bandwidth.average, measured.average)
        )
        attributes = [f"TYPE=SUBTITLES,GROUP-ID={_quoted(TEXT_GROUP)}"]
        language = packaged.languages.get(uri, text.language)
        if language != "und":
            attributes.append(f"LANGUAGE={_quoted(language)}")
        attributes.append(f"NAME={_quoted(text.name)}")
        attributes.append(f"DEFAULT={'YES' if text.default else 'NO'},AUTOSELECT=YES")
        attributes.append(f"FORCED={'YES' if text.forced else 'NO'},URI={_quoted(uri)}")
        lines.append("#EXT-X-MEDIA:" + ",".join(attributes))
    variants: list[dict[str, object]] = []
    iframe_lines: list[str] = []
    for rendition in plan.renditions:
        key = f"video_{rendition.name}"
        uri = layout.playlist(key)
        codecs = packaged.codecs.get(uri, "")
        video_codec = _video_codec(codecs)
        audio_codec = audio_codec or _audio_codec(codecs)
        video = measure(out, uri, segment_duration)
        total = video + audio_bandwidth + text_bandwidth
        all_codecs = ",".join(c for c in (video_codec, audio_codec if plan.audio else "") if c)
        frame_rate = packaged.frame_rates.get(uri, fps)
        attributes = [f"BANDWIDTH={total.peak}", f"AVERAGE-BANDWIDTH={total.average}"]
        if all_codecs:
            attributes.append(f"CODECS={_quoted(all_codecs)}")
        attributes += [f"RESOLUTION={rendition.width}x{rendition.height}", f"FRAME-RATE={frame_rate:.3f}"]
        if plan.audio:
            attributes.append(f"AUDIO={_quoted(AUDIO_GROUP)}")
        if plan.text:
            attributes.append(f"SUBTITLES={_quoted(TEXT_GROUP)}")
        attributes.append("CLOSED-CAPTIONS=NONE")
        variants.append(
            {
                "uri": uri,
                "bandwidth": total.peak,
                "average_bandwidth": total.average,
                "resolution": f"{rendition.width}x{rendition.height}",
            }
        )
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), uri]
        if iframes and (out / layout.iframes(key)).is_file():
            iframe_uri = layout.iframes(key)
            measured = measure(out, iframe_uri, segment_duration)
            iframe_lines.append(
                f"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={measured.peak},AVERAGE-BANDWIDTH={measured.average},"
                f"CODECS={_quoted(_video_codec(packaged.codecs.get(iframe_uri, codecs)))},"
                f"RESOLUTION={rendition.width}x{rendition.height},URI={_quoted(iframe_uri)}"
            )
    return "\n".join(lines + iframe_lines) + "\n", variants


def media_playlists(out: Path, plan: Plan, layout: Layout, *, iframes: bool) -> list[Path]:
    """Every audio and video media playlist the packager wrote (text playlists are never encrypted)."""
    names = [layout.playlist(f"video_{r.name}") for r in plan.renditions]
    if iframes:
        names += [layout.iframes(f"video_{r.name}") for r in plan.renditions]
    names += [layout.playlist(a.key) for a in plan.audio]
    return [out / name for name in names if (out / name).is_file()]


def _insert_before_segments(text: str, tags: list[str]) -> str:
    """``tags`` placed after the playlist's header and ``EXT-X-MAP``, before its first segment."""
    lines = text.splitlines()
    at = next(
        (i for i, line in enumerate(lines) if line.startswith(("#EXTINF", "#EXT-X-KEY", "#EXT-X-BYTERANGE"))),
        len(lines),
    )
    return "\n".join(lines[:at] + tags + lines[at:]) + "\n"


def clearkey_tag(protection: Protection) -> str:
    """ClearKey's key tag as hls.js reads it: the key id (public, also in every init segment) as the
    URI's data. The key itself comes from the client's license server, never from the playlist."""
    method = "SAMPLE-AES-CTR" if protection.scheme == "cenc" else "SAMPLE-AES"
    kid = bytes.fromhex(protection.key_id)
    return (
        f'#EXT-X-KEY:METHOD={method},URI="data:text/plain;base64,{base64.b64encode(kid).decode()}",'
        f'KEYID=0x{protection.key_id},KEYFORMAT="{CLEARKEY_FORMAT}",KEYFORMATVERSIONS="1"'
    )


def fix_key_tags(playlists: list[Path], protection: Protection) -> None:
    """Add ClearKey's key tag where it is one of the systems; drop the packager's ``identity`` tags,
    whose URI is the key id (or FairPlay's ``skd://`` URI), never the key ``identity`` promises."""
    for path in playlists:
        lines = path.read_text().splitlines()
        kept = [
            line for line in lines if not (line.startswith("#EXT-X-KEY:") and 'KEYFORMAT="identity"' in line)
        ]
        text = "\n".join(kept) + "\n"
        if "clearkey" in protection.systems:
            text = _insert_before_segments(text, [clearkey_tag(protection)])
        path.write_text(text)


def encrypt_aes128(playlists: list[Path], *, key: bytes, iv: bytes, key_uri: str) -> int:
    """Encrypt every segment the TS ``playlists`` name, whole, with AES-128-CBC (PKCS#7 padding, the
    job's IV), and name the key in each playlist. Returns the number of segments encrypted."""
    count = 0
    tag = f'#EXT-X-KEY:METHOD=AES-128,URI="{key_uri}",IV=0x{iv.hex()}'
    for path in playlists:
        parsed = _load(path)
        if parsed.is_i_frames_only:
            raise PermanentError("internal: AES-128 output has no I-frame playlists")
        for segment in parsed.segments:
            file = path.parent / str(segment.uri)
            padder = padding.PKCS7(128).padder()
            data = padder.update(file.read_bytes()) + padder.finalize()
            encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            file.write_bytes(encryptor.update(data) + encryptor.finalize())
            count += 1
        path.write_text(_insert_before_segments(path.read_text(), [tag]))
    return count
