"""ffmpeg argument lists for the media steps, kept apart from the steps so the benchmark runs the exact
same encode with plain ffmpeg."""

from __future__ import annotations

from dataclasses import dataclass
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
AUDIO_ARGS = ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ac", "2"]
MASTER_FROM_FFMPEG = "ffmpeg_master.m3u8"


@dataclass(frozen=True)
class Rendition:
    height: int
    kbps: int

    @property
    def name(self) -> str:
        return f"{self.height}p"


def ladder_for(height: int, count: int) -> list[Rendition]:
    """Up to ``count`` renditions, none taller than the source (a tiny source gets its own height)."""
    rungs = [Rendition(h, kbps) for h, kbps in LADDER if h <= height][:count]
    if not rungs:
        rungs = [Rendition(height - height % 2, LADDER[-1][1])]
    return rungs


def keyframe_args(segment_duration: float) -> list[str]:
    """A keyframe at every segment boundary, and none forced elsewhere, so segments are exact."""
    return ["-force_key_frames", f"expr:gte(t,n_forced*{segment_duration:g})", "-sc_threshold", "0"]


def hls_ladder_args(
    input_args: list[str],
    info: MediaInfo,
    *,
    prefix: str,
    renditions: list[Rendition],
    segment_duration: float,
    preset: str,
    drm: str = "clear",
    keyinfo: Path | None = None,
    cenc_key: str | None = None,
    cenc_kid: str | None = None,
) -> list[str]:
    """One ffmpeg run that decodes the source once and writes every rendition's HLS playlist.

    Run with the output directory as the working directory: the playlists then name their segments
    relatively. ffmpeg also writes ``MASTER_FROM_FFMPEG``, whose variant lines (bandwidth, codecs)
    the ``write_master`` step reuses. With ``cenc`` and audio, a second output writes the clear audio
    rendition (``audio_playlist``).
    """
    count = len(renditions)
    # ffmpeg's fragmented-MP4 CENC muxing makes AAC that no decoder can decrypt (video is fine), so
    # with cenc the audio is a separate, clear rendition that every variant names as its audio group.
    muxed_audio = info.has_audio and drm != "cenc"
    split = f"[0:v]split={count}" + "".join(f"[s{i}]" for i in range(count))
    scales = [f"[s{i}]scale=-2:{r.height}[v{i}]" for i, r in enumerate(renditions)]
    args = [*input_args, "-filter_complex", ";".join([split, *scales])]
    for i in range(count):
        args += ["-map", f"[v{i}]"]
    if muxed_audio:
        for _ in range(count):
            args += ["-map", "0:a:0"]
    args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-threads", encoder_threads()]
    for i, rendition in enumerate(renditions):
        args += [
            f"-b:v:{i}",
            f"{rendition.kbps}k",
            f"-maxrate:v:{i}",
            f"{rendition.kbps * 3 // 2}k",
            f"-bufsize:v:{i}",
            f"{rendition.kbps * 2}k",
        ]
    args += keyframe_args(segment_duration)
    if muxed_audio:
        args += AUDIO_ARGS
    streams = " ".join(
        f"v:{i}{f',a:{i}' if muxed_audio else ''},name:{r.name}" for i, r in enumerate(renditions)
    )
    args += [*_hls_vod(segment_duration), "-master_pl_name", MASTER_FROM_FFMPEG, "-var_stream_map", streams]
    if drm == "aes":
        assert keyinfo is not None
        args += ["-hls_key_info_file", str(keyinfo)]
    if drm == "cenc":
        assert cenc_key and cenc_kid
        args += [
            *_fmp4(f"{prefix}_%v"),
            "-hls_segment_options",
            f"encryption_scheme=cenc-aes-ctr:encryption_key={cenc_key}:encryption_kid={cenc_kid}",
        ]
    else:
        args += ["-hls_segment_filename", f"{prefix}_%v_%05d.ts"]
    args.append(f"{prefix}_%v.m3u8")
    if info.has_audio and not muxed_audio:
        args += ["-map", "0:a:0", *AUDIO_ARGS, *_hls_vod(segment_duration), *_fmp4(f"{prefix}_audio")]
        args.append(audio_playlist(prefix))
    return args


def audio_playlist(prefix: str) -> str:
    """The separate audio rendition's playlist (CENC output only)."""
    return f"{prefix}_audio.m3u8"


def _hls_vod(segment_duration: float) -> list[str]:
    return [
        "-f",
        "hls",
        "-hls_time",
        f"{segment_duration:g}",
        "-hls_playlist_type",
        "vod",
        "-hls_flags",
        "independent_segments",
    ]


def _fmp4(stem: str) -> list[str]:
    return [
        "-hls_segment_type",
        "fmp4",
        "-hls_fmp4_init_filename",
        f"{stem}_init.mp4",
        "-hls_segment_filename",
        f"{stem}_%05d.m4s",
    ]


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
