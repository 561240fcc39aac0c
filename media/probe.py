"""What a media file holds: duration, picture size and shape, frame rate, every audio and text track.

ffprobe describes the file as JSON (``-show_format -show_streams``); ffprobe is confined to the work dir
the file lies in, like every other tool (``media.sandbox``). What a file says about itself (a track's
language and title) is untrusted: it ends up in manifests and in the packager's stream descriptors, so
a language must look like one (else ``und``) and a title is cut down to a safe character set.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from jobs.workflows.registry import PermanentError, StepInterrupted
from media import sandbox, toolchain
from media.confine import CANNOT_CONFINE
from taskengine_site import shutdown

PROBE_TIMEOUT_SECONDS = 60
# The most ffprobe may print about one file: a file declaring thousands of streams is not a source.
MAX_PROBE_OUTPUT = 4 * 1024 * 1024
MAX_TRACKS = 32
# Text tracks the engine turns into WebVTT; bitmap subtitles (DVD, PGS, DVB) cannot be.
TEXT_CODECS = ("subrip", "srt", "mov_text", "webvtt", "ass", "ssa", "text")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,3}")
_TITLE_UNSAFE = re.compile(r"[^\w ._()+-]")
MAX_TITLE_CHARS = 64


def clean_language(value: Any) -> str:
    """A BCP 47 / ISO 639 language tag from a file or a parameter, or ``und`` for anything else."""
    if isinstance(value, str) and _LANGUAGE.fullmatch(value.strip()) and value.strip().lower() != "und":
        return value.strip()
    return "und"


def clean_title(value: Any) -> str:
    """A track title safe in an HLS attribute, a DASH label and a packager descriptor (no quotes,
    commas, ``=`` or controls), or empty."""
    if not isinstance(value, str):
        return ""
    return " ".join(_TITLE_UNSAFE.sub(" ", value).split())[:MAX_TITLE_CHARS].strip()


@dataclass(frozen=True)
class AudioTrack:
    index: int  # among the file's audio streams (ffmpeg's ``0:a:<index>``)
    codec: str
    language: str
    title: str
    channels: int
    sample_rate: int
    default: bool


@dataclass(frozen=True)
class TextTrack:
    index: int  # among the file's subtitle streams (``0:s:<index>``)
    codec: str
    language: str
    title: str
    default: bool
    forced: bool

    @property
    def is_text(self) -> bool:
        return self.codec in TEXT_CODECS


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str | None
    # The picture's sample aspect ratio as (num, den); (1, 1) for square pixels.
    sar: tuple[int, int] = (1, 1)
    audio: tuple[AudioTrack, ...] = field(default=())
    text: tuple[TextTrack, ...] = field(default=())

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def display_aspect(self) -> Fraction:
        """Width over height as the picture is meant to be seen."""
        num, den = self.sar
        return Fraction(self.width * num, self.height * den)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(text: Any) -> float:
    try:
        value = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value) if value > 0 else 0.0


def _sar(text: Any) -> tuple[int, int]:
    try:
        num, den = (int(part) for part in str(text).split(":"))
    except ValueError:
        return (1, 1)
    if num <= 0 or den <= 0:
        return (1, 1)
    ratio = Fraction(num, den)
    return (ratio.numerator, ratio.denominator)


def parse_ffprobe(data: dict[str, Any]) -> MediaInfo:
    """Read ffprobe's JSON; raise ``PermanentError`` when it describes no video stream."""
    streams = data.get("streams") or []
    if not isinstance(streams, list) or len(streams) > 4 * MAX_TRACKS:
        raise PermanentError("the source declares too many streams")
    video = next(
        (
            s
            for s in streams
            if isinstance(s, dict)
            and s.get("codec_type") == "video"
            and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )
    if video is None:
        raise PermanentError("the source holds no video stream")
    duration = _rate((data.get("format") or {}).get("duration")) or _rate(video.get("duration"))
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")) or 25.0
    audio: list[AudioTrack] = []
    text: list[TextTrack] = []
    for stream in streams:
        if not isinstance(stream, dict):
            continue
        tags = stream.get("tags") or {}
        disposition = stream.get("disposition") or {}
        if stream.get("codec_type") == "audio":
            audio.append(
                AudioTrack(
                    index=len(audio),
                    codec=str(stream.get("codec_name") or "unknown"),
                    language=clean_language(tags.get("language")),
                    title=clean_title(tags.get("title")),
                    channels=max(0, min(int(stream.get("channels") or 0), 64)),
                    sample_rate=max(0, int(_rate(stream.get("sample_rate")))),
                    default=bool(disposition.get("default")),
                )
            )
        elif stream.get("codec_type") == "subtitle":
            text.append(
                TextTrack(
                    index=len(text),
                    codec=str(stream.get("codec_name") or "unknown"),
                    language=clean_language(tags.get("language")),
                    title=clean_title(tags.get("title")),
                    default=bool(disposition.get("default")),
                    forced=bool(disposition.get("forced")),
                )
            )
    if len(audio) > MAX_TRACKS or len(text) > MAX_TRACKS:
        raise PermanentError(f"the source holds more than {MAX_TRACKS} audio or text tracks")
    return MediaInfo(
        duration=duration,
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        fps=round(fps, 3),
        video_codec=str(video.get("codec_name") or "unknown"),
        audio_codec=audio[0].codec if audio else None,
        sar=_sar(video.get("sample_aspect_ratio")),
        audio=tuple(audio),
        text=tuple(text),
    )


def run_ffprobe(
    path: Path | str, *, work_dir: Path, input_options: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """ffprobe's JSON description of ``path`` (inside ``work_dir``, where ffprobe runs confined)."""
    command = [
        toolchain.ffprobe_exe(),
        "-hide_banner",
        "-v",
        "error",
        "-print_format",
        "json",
        *extra,
        *input_options,
        "-i",
        str(path),
    ]
    argv, env = sandbox.child_command(command, work_dir)
    try:
        completed = subprocess.run(  # noqa: S603  (argument list, no shell)
            argv,
            capture_output=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
            cwd=work_dir,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise PermanentError(
            f"probing {Path(path).name} took longer than {PROBE_TIMEOUT_SECONDS} s"
        ) from None
    if completed.returncode != 0 and shutdown.requested():
        # Stopped by the platform's SIGTERM, not by the file: the step is handed back, not failed.
        raise StepInterrupted(f"probing {Path(path).name} stopped with the worker")
    errors = completed.stderr.decode("utf-8", errors="replace")
    if completed.returncode == CANNOT_CONFINE and errors.startswith("confine:"):
        raise PermanentError(f"probing {Path(path).name}: {errors.strip()}")
    if len(completed.stdout) > MAX_PROBE_OUTPUT:
        raise PermanentError(f"{Path(path).name} describes itself at more than {MAX_PROBE_OUTPUT} bytes")
    try:
        data = json.loads(completed.stdout or b"{}")
    except ValueError:
        data = {}
    if completed.returncode != 0 or not isinstance(data, dict) or not data:
        last = errors.strip().splitlines()[-1] if errors.strip() else "no output"
        raise PermanentError(f"{Path(path).name} is not a readable media file: {last}")
    return data


def probe(path: Path | str, *, work_dir: Path, input_options: tuple[str, ...] = ()) -> MediaInfo:
    """Describe the media file (or playlist) at ``path``, which lies inside ``work_dir``: ffprobe runs
    there, confined to it, so it reads nothing outside (a playlist's segments and keys included)."""
    data = run_ffprobe(
        path, work_dir=work_dir, input_options=input_options, extra=("-show_format", "-show_streams")
    )
    if not isinstance(data.get("format"), dict):
        raise PermanentError(f"{Path(path).name} is not a readable media file: no container found")
    return parse_ffprobe(data)
