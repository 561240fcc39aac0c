"""ffmpeg and Shaka Packager argument lists for the media steps, kept apart from the steps so the
benchmark runs the exact same commands by hand.

``vodstream`` makes its output in two runs:

1. **encode** (one ffmpeg run, the source decoded once): every video rendition as an H.264 MP4 with a
   keyframe at every segment boundary, square pixels and even sizes; every audio track as AAC (optionally
   loudness-normalised); every text track as WebVTT. These intermediate files stay in the work dir.
2. **package** (one Shaka Packager run over those files): CMAF fMP4 segments named by an HLS master and
   a DASH MPD alike (or MPEG-TS segments for legacy HLS players), I-frame playlists, encryption and
   the key systems' signalling (``pssh`` boxes, ``ContentProtection``, ``EXT-X-KEY``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from media.ffmpeg import encoder_threads
from media.probe import MediaInfo

# (height, video kbps) from the top; a source gets the rungs at or below its own height.
LADDER: tuple[tuple[int, int], ...] = (
    (1080, 5000),
    (720, 2800),
    (480, 1400),
    (360, 800),
    (240, 400),
    (144, 200),
)
AUDIO_BITRATE = "128k"
AUDIO_SAMPLE_RATE = "48000"
AUDIO_ARGS = ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ac", "2"]
ENCODED = "enc"  # the work folder the encode writes into
SEGMENT_NUMBER = "$Number%05d$"

# Named loudness targets: integrated loudness (LUFS), true peak (dBTP) and loudness range (LU).
LOUDNESS_STANDARDS: dict[str, tuple[float, float, float]] = {
    "ebu_r128": (-23.0, -1.0, 7.0),
    "atsc_a85": (-24.0, -2.0, 7.0),
}
# What Shaka Packager calls the key systems the ``drm`` parameter names.
PACKAGER_SYSTEMS = {
    "clearkey": "CommonSystem",
    "widevine": "Widevine",
    "playready": "PlayReady",
    "fairplay": "FairPlay",
}


@dataclass(frozen=True)
class Rendition:
    height: int
    kbps: int
    width: int = 0

    @property
    def name(self) -> str:
        return f"{self.height}p"


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def ladder_for(info: MediaInfo, count: int) -> list[Rendition]:
    """Up to ``count`` renditions, none taller than the source (a tiny source gets its own height),
    each with even sides and square pixels: the width follows the source's display aspect ratio."""
    aspect = info.display_aspect
    rungs = [(h, kbps) for h, kbps in LADDER if h <= info.height][:count]
    if not rungs:
        rungs = [(max(2, info.height - info.height % 2), LADDER[-1][1])]
    return [Rendition(h, kbps, _even(float(h * aspect))) for h, kbps in rungs]


def keyframe_args(segment_duration: float) -> list[str]:
    """A keyframe at every segment boundary, and none forced elsewhere, so segments are exact."""
    return ["-force_key_frames", f"expr:gte(t,n_forced*{segment_duration:g})", "-sc_threshold", "0"]


@dataclass(frozen=True)
class AudioOut:
    """One audio track of the output: the source's audio stream ``index``, and how it is labelled."""

    index: int
    language: str
    name: str
    channels: int
    default: bool
    # A second-pass loudnorm filter (``media.commands.loudnorm_filter``), or None.
    loudnorm: str | None = None

    @property
    def key(self) -> str:
        return f"audio_{self.index}"


@dataclass(frozen=True)
class TextOut:
    """One text track of the output: the source's subtitle stream ``index`` or a sidecar file."""

    key: str
    language: str
    name: str
    default: bool = False
    forced: bool = False
    stream: int | None = None  # the source's subtitle stream (``0:s:<stream>``)
    sidecar: Path | None = None  # a staged SRT or WebVTT file
    sidecar_format: str = ""  # its ffmpeg demuxer: srt or webvtt


@dataclass
class Plan:
    """Everything one vodstream output holds, and what of the source it had to leave out (and why)."""

    renditions: list[Rendition]
    audio: list[AudioOut] = field(default_factory=list)
    text: list[TextOut] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def loudnorm_analysis_args(
    input_args: list[str], tracks: list[int], target: tuple[float, float, float]
) -> list[str]:
    """The first loudnorm pass: measure every audio track in ``tracks`` in one decode; each filter
    prints its measurement as JSON after a ``[Parsed_loudnorm_<n> …]`` line, ``n`` in track order."""
    integrated, peak, loudness_range = target
    chains = [
        f"[0:a:{index}]loudnorm=I={integrated:g}:TP={peak:g}:LRA={loudness_range:g}:print_format=json[m{n}]"
        for n, index in enumerate(tracks)
    ]
    args = ["-loglevel", "info", *input_args, "-filter_complex", ";".join(chains)]
    for n in range(len(tracks)):
        args += ["-map", f"[m{n}]", "-f", "null", "-"]
    return args


_LOUDNORM_BLOCK = re.compile(r"\[Parsed_loudnorm_(\d+) @ [^\]]*\]\s*(\{[^{}]*\})", re.S)


def parse_loudnorm(stderr: str) -> dict[int, dict[str, str]]:
    """The first pass's measurements by filter number."""
    import json

    found: dict[int, dict[str, str]] = {}
    for match in _LOUDNORM_BLOCK.finditer(stderr):
        try:
            data = json.loads(match.group(2))
        except ValueError:
            continue
        if isinstance(data, dict):
            found[int(match.group(1))] = {str(k): str(v) for k, v in data.items()}
    return found


def _measure(value: str) -> str:
    """A measured figure for the second pass; ``-inf`` (silence) becomes the filter's lowest value."""
    try:
        number = float(value)
    except ValueError:
        return "-99"
    return f"{max(-99.0, min(99.0, number)):.2f}" if number == number else "-99"


def loudnorm_filter(target: tuple[float, float, float], measured: dict[str, str]) -> str:
    """The second loudnorm pass, linear where the measurement allows, from the first pass's figures."""
    integrated, peak, loudness_range = target
    return (
        f"loudnorm=I={integrated:g}:TP={peak:g}:LRA={loudness_range:g}"
        f":measured_I={_measure(measured.get('input_i', ''))}"
        f":measured_TP={_measure(measured.get('input_tp', ''))}"
        f":measured_LRA={max(0.0, float(_measure(measured.get('input_lra', '')))):.2f}"
        f":measured_thresh={_measure(measured.get('input_thresh', ''))}"
        f":offset={_measure(measured.get('target_offset', ''))}:linear=true"
    )


def encode_args(
    input_args: list[str],
    plan: Plan,
    *,
    segment_duration: float,
    preset: str,
) -> list[str]:
    """The one ffmpeg run that decodes the source once and writes every track of ``plan`` into
    ``ENCODED/`` (relative to the working directory): ``video_<h>p.mp4``, ``audio_<n>.mp4``,
    ``<text key>.vtt``."""
    args = list(input_args)
    sidecars = [text for text in plan.text if text.sidecar is not None]
    for text in sidecars:
        assert text.sidecar is not None
        args += ["-f", text.sidecar_format, "-protocol_whitelist", "file", "-i", str(text.sidecar)]
    count = len(plan.renditions)
    split = f"[0:v:0]split={count}" + "".join(f"[s{i}]" for i in range(count))
    scales = [
        f"[s{i}]scale={r.width}:{r.height}:flags=bicubic,setsar=1[v{i}]"
        for i, r in enumerate(plan.renditions)
    ]
    args += ["-filter_complex", ";".join([split, *scales])]
    threads = encoder_threads()
    for i, rendition in enumerate(plan.renditions):
        args += ["-map", f"[v{i}]", "-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p"]
        args += ["-threads", threads, "-b:v", f"{rendition.kbps}k", "-maxrate", f"{rendition.kbps * 3 // 2}k"]
        args += ["-bufsize", f"{rendition.kbps * 2}k", *keyframe_args(segment_duration)]
        args += ["-an", "-sn", "-dn", "-map_metadata", "-1", f"{ENCODED}/video_{rendition.name}.mp4"]
    for audio in plan.audio:
        args += ["-map", f"0:a:{audio.index}", "-vn", "-sn", "-dn", "-map_metadata", "-1"]
        if audio.loudnorm:
            args += ["-af", audio.loudnorm]
        args += ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ac", str(audio.channels), "-ar", AUDIO_SAMPLE_RATE]
        args.append(f"{ENCODED}/{audio.key}.mp4")
    for text in plan.text:
        source = f"0:s:{text.stream}" if text.stream is not None else f"{1 + sidecars.index(text)}:s:0"
        args += ["-map", source, "-c:s", "webvtt", "-f", "webvtt", f"{ENCODED}/{text.key}.vtt"]
    return args


@dataclass(frozen=True)
class Protection:
    """How the packager encrypts and which key systems it signals."""

    scheme: str  # cenc or cbcs
    key_id: str  # hex
    key: str  # hex
    systems: tuple[str, ...]  # clearkey, widevine, playready, fairplay
    # Concatenated pssh boxes (hex) a key server gave for some systems; the packager makes the rest.
    pssh: str = ""
    pssh_systems: tuple[str, ...] = ()
    # FairPlay's key URI (skd://…) for the HLS key tags.
    fairplay_uri: str = ""

    def flagfile(self) -> str:
        """The packager flags that carry the key: read from a private file in the work dir, never
        given on the command line, where any process on the host could read them."""
        return f"--enable_raw_key_encryption\n--keys=label=:key_id={self.key_id}:key={self.key}\n"

    def flags(self) -> list[str]:
        flags = ["--protection_scheme", self.scheme, "--clear_lead", "0"]
        generated = [PACKAGER_SYSTEMS[s] for s in self.systems if s not in self.pssh_systems]
        if generated:
            flags += ["--protection_systems", ",".join(generated)]
        if self.pssh:
            flags += ["--pssh", self.pssh]
        if "fairplay" in self.systems and self.fairplay_uri:
            flags += ["--hls_key_uri", self.fairplay_uri]
        return flags


@dataclass(frozen=True)
class Layout:
    """Where the packager writes each track, relative to the output folder."""

    prefix: str
    container: str  # cmaf or ts

    @property
    def suffix(self) -> str:
        return ".ts" if self.container == "ts" else ".m4s"

    def folder(self, key: str) -> str:
        return f"{self.prefix}_{key}"

    def playlist(self, key: str) -> str:
        return f"{self.prefix}_{key}.m3u8"

    def iframes(self, key: str) -> str:
        return f"{self.prefix}_{key}_iframes.m3u8"


PACKAGER_MASTER = "packager_master.m3u8"


def packager_args(
    plan: Plan,
    layout: Layout,
    *,
    formats: tuple[str, ...],
    segment_duration: float,
    mpd_name: str,
    protection: Protection | None = None,
    iframes: bool = True,
    default_language: str = "",
    flagfile: Path | None = None,
) -> list[str]:
    """The Shaka Packager run over ``plan``'s encoded files, run in the output folder (a sibling of
    ``ENCODED``), writing every segment, playlist and manifest there.

    HLS media playlists, the packager's own master (``PACKAGER_MASTER``, which the engine rewrites
    with measured bandwidths) and the MPD name the same segments. Text is WebVTT segments for HLS and
    WebVTT in fMP4 (``wvtt``) for DASH, whose players do not all read segmented plain WebVTT.
    """
    hls, dash = "hls" in formats, "dash" in formats
    fmp4 = layout.container == "cmaf"
    descriptors: list[str] = []

    def media(key: str, stream: str, source: str, extra: list[str]) -> str:
        fields = [f"in=../{ENCODED}/{source}", f"stream={stream}"]
        folder = layout.folder(key)
        if fmp4:
            fields.append(f"init_segment={folder}/init.mp4")
        fields.append(f"segment_template={folder}/{SEGMENT_NUMBER}{layout.suffix}")
        if hls:
            fields.append(f"playlist_name={layout.playlist(key)}")
        return ",".join(fields + extra)

    for rendition in plan.renditions:
        key = f"video_{rendition.name}"
        extra = [f"iframe_playlist_name={layout.iframes(key)}"] if hls and iframes else []
        descriptors.append(media(key, "video", f"{key}.mp4", extra))
    for audio in plan.audio:
        extra = [f"language={audio.language}"] if audio.language != "und" else []
        if hls:
            extra += ["hls_group_id=audio", f"hls_name={audio.name}"]
        descriptors.append(media(audio.key, "audio", f"{audio.key}.mp4", extra))
    for text in plan.text:
        language = [f"language={text.language}"] if text.language != "und" else []
        if hls:
            folder = layout.folder(text.key)
            fields = [f"in=../{ENCODED}/{text.key}.vtt", "stream=text"]
            fields += [
                f"segment_template={folder}/{SEGMENT_NUMBER}.vtt",
                f"playlist_name={layout.playlist(text.key)}",
            ]
            fields += ["hls_group_id=subtitles", f"hls_name={text.name}", *language]
            if dash:
                fields.append("hls_only=1")
            descriptors.append(",".join(fields))
        if dash:
            folder = f"{layout.folder(text.key)}_dash"
            fields = [f"in=../{ENCODED}/{text.key}.vtt", "stream=text", "format=mp4"]
            fields += [f"init_segment={folder}/init.mp4", f"segment_template={folder}/{SEGMENT_NUMBER}.m4s"]
            fields += language
            if hls:
                fields.append("dash_only=1")
            descriptors.append(",".join(fields))
    args = [*descriptors, "--segment_duration", f"{segment_duration:g}"]
    if hls:
        args += ["--hls_master_playlist_output", PACKAGER_MASTER, "--hls_playlist_type", "VOD"]
    if dash:
        args += ["--mpd_output", mpd_name, "--generate_static_live_mpd"]
    if default_language and default_language != "und":
        args += ["--default_language", default_language]
    if protection is not None:
        if flagfile is not None:
            args.append(f"--flagfile={flagfile}")
        args += protection.flags()
    return args


def mp4_args(input_args: list[str], info: MediaInfo, output: Path, *, preset: str) -> list[str]:
    """An MP4 of the input: stream copy when it already holds H.264 (and AAC), else an H.264 encode."""
    args = [*input_args, "-map", "0:v:0"]
    if info.has_audio:
        args += ["-map", "0:a:0"]
    if info.video_codec == "h264" and info.audio_codec in (None, "aac"):
        args += ["-c", "copy"]
    else:
        args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-threads", encoder_threads()]
        if info.has_audio:
            args += ["-c:a", "aac", "-b:a", AUDIO_BITRATE]
    return [*args, "-movflags", "+faststart", str(output)]
