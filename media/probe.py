"""What a media file holds: duration, picture size, frame rate, audio.

imageio-ffmpeg ships no ffprobe, so this reads the description ffmpeg prints of its input
(``ffmpeg -i file``, which exits with an error because no output is named, after describing the input).
That ffmpeg is confined to the work dir the file lies in, like every other (``media.sandbox``).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jobs.workflows.registry import PermanentError
from media import sandbox
from media.confine import CANNOT_CONFINE
from media.ffmpeg import ffmpeg_exe

PROBE_TIMEOUT_SECONDS = 60

_DURATION = re.compile(r"Duration:\s*(\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"([\d.]+) fps")
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: (\w+)")


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str | None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_description(text: str) -> MediaInfo:
    """Read ffmpeg's description of its first input; raise ``PermanentError`` if it holds no video."""
    duration_match = _DURATION.search(text)
    video = _VIDEO.search(text)
    if video is None:
        raise PermanentError("the source holds no video stream")
    fps_match = _FPS.search(text[video.start() : text.find("\n", video.start())])
    audio = _AUDIO.search(text)
    duration = 0.0
    if duration_match:
        hours, minutes, seconds = duration_match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return MediaInfo(
        duration=duration,
        width=int(video.group(2)),
        height=int(video.group(3)),
        fps=float(fps_match.group(1)) if fps_match else 25.0,
        video_codec=video.group(1),
        audio_codec=audio.group(1) if audio else None,
    )


def probe(path: Path | str, *, work_dir: Path, input_options: tuple[str, ...] = ()) -> MediaInfo:
    """Describe the media file (or playlist) at ``path``, which lies inside ``work_dir``: ffmpeg runs
    there, confined to it, so it reads nothing outside (a playlist's segments and keys included)."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", *input_options, "-i", str(path)]
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
    text = completed.stderr.decode("utf-8", errors="replace")
    if completed.returncode == CANNOT_CONFINE and text.startswith("confine:"):
        raise PermanentError(f"probing {Path(path).name}: {text.strip()}")
    if "Duration:" not in text:
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise PermanentError(f"{Path(path).name} is not a readable media file: {last}")
    return parse_description(text)
