"""Benchmark: the vodstream workflow against the same ffmpeg and Shaka Packager commands run by hand.

A 60 s 1280x720 25 fps synthetic source (testsrc2 + a sine tone, made first and not timed) becomes a
CMAF ladder (720p, 480p, 360p, 6 s segments) with an HLS master and a DASH MPD. "plain" runs the
identical encode (one ffmpeg) and packaging (one packager) command lines directly, unconfined;
"engine" runs every step of the vodstream definition in order with a real StepContext (staging the
source from local storage, probing, the confined encode and packaging with progress and heartbeat,
the measured-bandwidth master, the publication into the destination folder). Both are reported as a
multiple of real time; the overhead is the engine's extra wall time over the commands by hand.

    .venv/bin/python bench/vodstream.py [--seconds 60] [--preset veryfast] [--rounds 3]

Django settings are loaded (the steps use them) but no database or broker is contacted; placeholders
are used for DATABASE_URL, REDIS_URL and SECRET_KEY when they are not set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskengine_site.settings")
os.environ.setdefault("SECRET_KEY", "bench")
os.environ.setdefault("DATABASE_URL", "postgres://bench@127.0.0.1:5432/bench")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

import django

django.setup()

from django.conf import settings  # noqa: E402

from jobs.workflows.registry import StepContext, get_step, load_steps  # noqa: E402
from media import commands, toolchain  # noqa: E402
from media.definitions import MEDIA_DEFINITIONS  # noqa: E402
from media.ffmpeg import ffmpeg_exe  # noqa: E402
from media.probe import probe  # noqa: E402


def make_source(path: Path, seconds: int) -> None:
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=1280x720:rate=25:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "18",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )


def run_plain(source: Path, work: Path, preset: str, segment: float) -> float:
    info = probe(source, work_dir=source.parent)
    plan = commands.Plan(
        renditions=commands.ladder_for(info, 3),
        audio=[
            commands.AudioOut(t.index, t.language, f"Audio {t.index + 1}", min(t.channels, 2), t.index == 0)
            for t in info.audio
        ],
    )
    encode = commands.encode_args(["-i", str(source)], plan, segment_duration=segment, preset=preset)
    package = commands.packager_args(
        plan,
        commands.Layout("bench", "cmaf"),
        formats=("hls", "dash"),
        segment_duration=segment,
        mpd_name="bench.mpd",
    )
    (work / commands.ENCODED).mkdir(parents=True)
    (work / "out").mkdir()
    started = time.monotonic()
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "warning", *encode],
        check=True,
        cwd=work,
    )
    subprocess.run([toolchain.packager_exe(), *package], check=True, cwd=work / "out", capture_output=True)
    return time.monotonic() - started


# The steps' log lines: "HLS encode took N s" is ffmpeg's own run inside the engine.
LOG: list[str] = []
# Wall time of each step, over the rounds: shows where the engine's time goes apart from ffmpeg.
STEP_SECONDS: dict[str, list[float]] = {}


class Context:
    """What the engine gives a step: here the log goes nowhere and the heartbeat only counts."""

    def __init__(self) -> None:
        self.beats = 0

    def log(self, message: str, severity: int = 1) -> None:
        LOG.append(message)

    def heartbeat(self, progress: float | None = None) -> None:
        self.beats += 1


def run_engine(root: Path, job_id: int, preset: str, segment: float) -> tuple[float, dict[str, Any]]:
    load_steps()
    parameters = {
        "content_id": "bench",
        "source_folder": "incoming",
        "output_folder": f"vod/{job_id}",
        "video_preset": preset,
        "segment_duration": segment,
        "renditions": 3,
    }
    results: dict[str, Any] = {}
    probe_ctx = Context()
    started = time.monotonic()
    for item in MEDIA_DEFINITIONS["vodstream"]:
        ctx = StepContext(
            job_id=job_id,
            task_id=len(results) + 1,
            client_name="bench",
            workflow="vodstream",
            job_parameters=parameters,
            step_parameters=item.get("parameters") or {},
            results=dict(results),
            log=probe_ctx.log,
            heartbeat=probe_ctx.heartbeat,
            storage_root=root,
        )
        step_started = time.monotonic()
        results[item["step"]] = get_step(item["step"]).fn(ctx)
        STEP_SECONDS.setdefault(item["step"], []).append(time.monotonic() - step_started)
    return time.monotonic() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--segment", type=float, default=6)
    parser.add_argument(
        "--rounds", type=int, default=3, help="plain/engine pairs to run; the best is reported"
    )
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-vodstream-"))
    settings.TASKENGINE_WORK_DIR = work / "work"
    try:
        root = work / "storage"
        # The storage area of the client "bench" whose job this is.
        (root / "bench" / "incoming").mkdir(parents=True)
        source = root / "bench" / "incoming" / "source.mp4"
        made = time.monotonic()
        make_source(source, options.seconds)
        print(f"source: {options.seconds} s 1280x720 made in {time.monotonic() - made:.1f} s", flush=True)
        plain_times: list[float] = []
        engine_times: list[float] = []
        for round_ in range(options.rounds):
            # Alternate which goes first, so a neighbour's load on a shared machine hits both alike.
            order = ("plain", "engine") if round_ % 2 == 0 else ("engine", "plain")
            for kind in order:
                if kind == "plain":
                    seconds = run_plain(source, work / f"plain{round_}", options.preset, options.segment)
                    plain_times.append(seconds)
                    print(f"round {round_ + 1}: plain ffmpeg     {seconds:7.2f} s", flush=True)
                else:
                    seconds, results = run_engine(root, 1000 + round_, options.preset, options.segment)
                    engine_times.append(seconds)
                    files = len(results["publish_outputs"]["files"])
                    print(
                        f"round {round_ + 1}: engine vodstream {seconds:7.2f} s ({files} files)", flush=True
                    )
        steps = ", ".join(f"{name} {min(times):.2f}" for name, times in STEP_SECONDS.items())
        print(f"engine steps (best, s): {steps}")
        # The engine's own work, apart from the encode and packaging: the same in every round whatever
        # the load. ("Encode took X s (…), packaging Y s; …")
        encodes = [
            float(line.split()[2]) + float(line.split("packaging ")[1].split()[0])
            for line in LOG
            if line.startswith("Encode took")
        ]
        outside = [total - encode for total, encode in zip(engine_times, encodes, strict=True)]
        print(
            f"engine work outside ffmpeg: best {min(outside):.2f} s, worst {max(outside):.2f} s "
            f"({100 * min(outside) / min(plain_times):.1f}% of the best plain encode)"
        )
        plain, engine = min(plain_times), min(engine_times)
        overhead = 100.0 * (engine - plain) / plain
        median_overhead = 100.0 * (statistics.median(engine_times) / statistics.median(plain_times) - 1)
        print(
            f"vodstream {options.seconds}s 720p -> 720p/480p/360p CMAF HLS+DASH ({options.preset}, "
            f"load average {os.getloadavg()[0]:.2f}, "
            f"{os.cpu_count()} cores, best of {options.rounds}): "
            f"engine {options.seconds / engine:.2f}x real time ({engine:.2f} s), "
            f"plain ffmpeg {options.seconds / plain:.2f}x ({plain:.2f} s), "
            f"overhead {overhead:+.1f}% (medians {median_overhead:+.1f}%)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
