"""The media steps of the VOD workflows: each does one piece of work with ffmpeg or Shaka Packager.

Steps of one job may run on different workers, so none relies on another step's local files: sources
are staged into the job's work directory by whichever step needs them (a staged copy of the same size is
reused), and every step that makes an output uploads it to the destination storage before it ends.

Result convention (read by ``jobs/callbacks.py``): intermediate steps list what they uploaded under
``written`` and never use the keys ``files``, ``metadata`` or ``duration``; the last step of every media
workflow, ``publish_outputs``, checks those files exist and returns
``{"message": <manifest or main file>, "files": [every file written], "metadata": {"duration": s}}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from clients.crypto import SecretUnreadable
from jobs.workflows.registry import PermanentError, StepContext, TransientError, step
from media import commands, containers, cpix, hls, packaging, storage, toolchain
from media.ffmpeg import encoder_threads, run_ffmpeg, run_packager
from media.models import ContentKey
from media.params import Clip, parse_clips, resolve_parameters
from media.probe import MediaInfo, probe
from media.selectors import content_key_get
from media.services import content_key_make
from taskengine_site.errors import DomainError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")
# How ffmpeg opens what the engine staged. Every input has its demuxer forced and lists the only
# demuxers allowed inside it (ffmpeg passes the list on to a playlist's segments and a list's files),
# so no content chooses how ffmpeg reads it; ffmpeg may open local files only, never the network.
# A playlist the engine wrote (``hls.fetch_hls``) names segments it sniffed, decrypted, in the clear:
# no key, no crypto protocol, and only the segment suffixes it gives them.
_SEGMENT_SUFFIXES = ",".join(sorted({c.suffix.lstrip(".") for c in containers.SEGMENT_CONTAINERS}))
PLAYLIST_INPUT = (
    "-f",
    "hls",
    "-protocol_whitelist",
    "file",
    "-format_whitelist",
    ",".join(["hls", *sorted({c.demuxer for c in containers.SEGMENT_CONTAINERS})]),
    "-allowed_extensions",
    _SEGMENT_SUFFIXES,
    "-allowed_segment_extensions",
    _SEGMENT_SUFFIXES,
    "-seg_format_options",
    "enable_drefs=0",
)


def concat_input(container: containers.Container) -> tuple[str, ...]:
    """ffmpeg options for an ffconcat list the engine wrote, naming files of ``container`` by the
    names the engine gave them, relative to the list (the concat demuxer's safe mode checks that)."""
    whitelist = f"concat,{container.demuxer}"
    return ("-f", "concat", "-safe", "1", "-protocol_whitelist", "file", "-format_whitelist", whitelist)


def _write_ffconcat(path: Path, files: list[Path]) -> None:
    """An ffconcat list of files in its own folder; only names the engine made (``[a-z0-9_.]``)."""
    for file in files:
        if file.parent != path.parent or not re.fullmatch(r"[a-z0-9_]+\.[a-z0-9]+", file.name):
            raise PermanentError(f"internal: {file.name!r} is not an engine-made name beside {path.name}")
    path.write_text("ffconcat version 1.0\n" + "".join(f"file {file.name}\n" for file in files))


def params(ctx: StepContext) -> dict[str, Any]:
    """The job's parameters with this step's overriding them, defaults and templates resolved."""
    try:
        return resolve_parameters({**ctx.job_parameters, **ctx.step_parameters})
    except DomainError as exc:
        raise PermanentError(exc.message) from None


def _output_key(p: dict[str, Any], name: str) -> str:
    return storage.join_key(p["output_folder"], name)


def _fresh_dir(ctx: StepContext, name: str) -> Path:
    """An empty work folder: a retried step must not publish what a failed attempt left behind."""
    path = storage.work_dir(ctx, name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@dataclass
class Sources:
    """Staged sources: the ffmpeg input arguments that read them, and what they hold."""

    input_args: list[str]
    info: MediaInfo
    names: list[str]


def ensure_sources(ctx: StepContext, p: dict[str, Any]) -> Sources:
    """Stage the job's sources from ``source_folder`` (idempotent) and describe them.

    The sources are the folder's video files in name order (several are joined, so they must share
    their encoding), or ``source_file`` alone; a folder without video files but with an HLS playlist
    (for ``createmp4`` and the small workflows) is read through its master playlist, staged by
    ``hls.fetch_hls``. What a run of this job wrote into the same folder (its MP4, old init segments) is
    not taken for a source on a rerun; segments are in sub-folders, which are never sources.

    Video files are staged as ``source000.mp4``, ``source001.mov``, … (the client's names never reach
    ffmpeg, nor an ffconcat list) and each must really be an MP4 (ISO-BMFF); several are joined by an
    ffconcat list naming only those files.
    """
    src = storage.source_storage(ctx)
    folder = p["source_folder"]
    local = storage.work_dir(ctx, "sources")
    if p.get("source_file"):
        names = [storage.normalise_key(p["source_file"])]
    else:
        listing = src.list_files(folder)
        names = [n for n in listing if "/" not in n and n.lower().endswith(VIDEO_SUFFIXES)]
        if p.get("output_folder") == folder and len(names) > 1:
            # What an earlier run of this job wrote beside the real sources is not a source: its MP4
            # (whether or not this run makes one), and the fMP4 init segments older versions of the
            # engine wrote at the top of the folder.
            made_here = {p.get("mp4_filename")}
            init_pattern = f"{p.get('content_id')}_"
            kept = [
                n
                for n in names
                if n not in made_here and not (n.startswith(init_pattern) and n.endswith("_init.mp4"))
            ]
            names = kept or names
        if not names:
            playlists = [n for n in listing if n.lower().endswith(".m3u8")]
            if not playlists:
                raise PermanentError(f"no MP4 source or HLS playlist in {folder or 'the storage root'}")
            fetcher = hls.StorageFetcher(src)
            master = _pick_master(fetcher, folder, playlists)
            fetched = hls.fetch_hls(storage.join_key(folder, master), local / "hls", fetcher)
            args = [*PLAYLIST_INPUT, "-i", str(fetched.playlist)]
            return Sources(
                args,
                probe(fetched.playlist, work_dir=storage.work_dir(ctx), input_options=PLAYLIST_INPUT),
                [master],
            )
    paths = []
    for index, name in enumerate(names):
        ctx.heartbeat()
        suffix = Path(name).suffix.lower() if name.lower().endswith(VIDEO_SUFFIXES) else ".mp4"
        staged = storage.stage(src, storage.join_key(folder, name), local / f"source{index:03d}{suffix}")
        containers.require(staged, (containers.ISOBMFF,), f"source {name!r}")
        paths.append(staged)
    options = containers.input_options(containers.ISOBMFF)
    infos = [probe(path, work_dir=storage.work_dir(ctx), input_options=options) for path in paths]
    info = infos[0]
    if len(paths) == 1:
        return Sources([*options, "-i", str(paths[0])], info, names)
    listing_file = local / "sources.ffconcat"
    _write_ffconcat(listing_file, paths)
    total = dataclasses.replace(info, duration=sum(i.duration for i in infos))
    return Sources([*concat_input(containers.ISOBMFF), "-i", str(listing_file)], total, names)


# A folder holding more playlists than this is not one HLS stream.
MAX_FOLDER_PLAYLISTS = 64


def _pick_master(fetcher: hls.StorageFetcher, folder: str, playlists: list[str]) -> str:
    """The folder's master playlist, else its first media playlist (each read bounded and vetted)."""
    if len(playlists) > MAX_FOLDER_PLAYLISTS:
        raise PermanentError(
            f"{folder or 'the storage root'} holds {len(playlists)} playlists, more than "
            f"{MAX_FOLDER_PLAYLISTS}: not one HLS stream"
        )
    for name in playlists:
        if isinstance(hls.read_playlist(fetcher, storage.join_key(folder, name)), list):
            return name
    return playlists[0]


def _skipped(reason: str, ctx: StepContext | None = None, made: str = "") -> dict[str, Any]:
    """A step with nothing to do; with ``ctx``, the job's log says what was not made and why."""
    if ctx is not None:
        ctx.log(f"No {made} made: {reason}")
    return {"skipped": True, "reason": reason}


# --- steps shared by the workflows --------------------------------------------------------------------


@step("fetch_sources")
def fetch_sources(ctx: StepContext) -> dict[str, Any]:
    """Stages the sources of ``source_folder`` from the source storage and probes them."""
    p = params(ctx)
    sources = ensure_sources(ctx, p)
    ctx.log(
        f"Sources: {', '.join(sources.names)} ({sources.info.duration:.2f} s, "
        f"{sources.info.width}x{sources.info.height}, audio: {sources.info.audio_codec or 'none'})"
    )
    return {
        "sources": sources.names,
        "source": sources.info.as_dict(),
        "media_duration": sources.info.duration,
    }


@step("publish_outputs")
def publish_outputs(ctx: StepContext) -> dict[str, Any]:
    """Checks that every file the earlier steps wrote is in the destination storage; reports them.

    The last step of every media workflow: its result is the job callback's ``message``, ``files`` and
    ``metadata.duration``. It also removes the job's work directory.
    """
    p = params(ctx)
    dest = storage.destination_storage(ctx)
    written: list[str] = []
    manifest = primary = None
    duration = None
    for result in ctx.results.values():
        if not isinstance(result, dict):
            continue
        for key in result.get("written") or []:
            if key not in written:
                written.append(key)
        if result.get("manifest") and manifest is None:
            manifest = result["manifest"]
            duration = result.get("media_duration", duration)
        if result.get("primary"):
            primary = result["primary"]
            if manifest is None:
                duration = result.get("media_duration", duration)
        if duration is None and result.get("media_duration") is not None:
            duration = result["media_duration"]
    missing = [key for key in written if not dest.exists(key)]
    if missing:
        raise PermanentError(f"{len(missing)} output file(s) missing from the destination: {missing[:5]}")
    if not written:
        raise PermanentError("no step of this workflow wrote a file")
    message = manifest or primary or written[0]
    storage.remove_work_dir(ctx)
    ctx.log(f"Published {len(written)} file(s) to {p['output_folder']}; main output {message}")
    return {
        "message": message,
        "files": written,
        "metadata": {"duration": round(float(duration or 0.0), 3)},
    }


# --- vodstream ----------------------------------------------------------------------------------------


@step("prepare_encryption")
def prepare_encryption(ctx: StepContext) -> dict[str, Any]:
    """Makes the job's content key: ``drm`` ``aes`` (HLS AES-128) or key systems (ClearKey, Widevine,
    PlayReady, FairPlay) under ``cenc`` or ``cbcs``, the key made by the engine or, with
    ``key_server_url``, given by the client's CPIX key server with each system's signalling.

    The key is a secret: it is stored encrypted in the database (``ContentKey``), given to the owning
    client only by ``GET /jobs/<id>/keys`` and the signed job callback, and never written to storage
    nor to a step's result (the API shows results). AES-128 playlists name the client's ``key_uri``.
    A retried attempt gets the key the first one made.
    """
    p = params(ctx)
    mode = p["drm"]
    if mode == "clear":
        return {"drm": "clear"}
    key_uri = str(p.get("key_uri") or "") if mode == "aes" else ""
    if mode == "aes" and (not key_uri or not key_uri.isprintable()):
        # The URI is written into every playlist's key tag: a line break would end the tag.
        raise PermanentError("drm aes needs a key_uri without control characters")
    systems = tuple(p["drm_systems"])
    signalling: dict[str, Any] = {}
    try:
        if mode != "aes" and p.get("key_server_url"):
            key = _key_from_server(ctx, p, mode, systems, signalling)
        else:
            key = content_key_make(job_id=ctx.job_id, kind=mode, key_uri=key_uri, systems=systems)
    except DomainError as exc:
        raise PermanentError(exc.message) from None
    if mode == "aes":
        ctx.log(f"AES-128 key ready; playlists will name it as {key.key_uri}")
        return {"drm": "aes", "key_uri": key.key_uri}
    if p.get("fairplay_key_uri") and not signalling.get("fairplay_uri"):
        signalling["fairplay_uri"] = p["fairplay_key_uri"]
    ctx.log(f"{mode} key ready ({key.source}), key id {key.key_id}, key systems {', '.join(systems)}")
    return {"drm": mode, "kid": key.key_id, "systems": list(systems), **signalling}


def _key_from_server(
    ctx: StepContext, p: dict[str, Any], mode: str, systems: tuple[str, ...], signalling: dict[str, Any]
) -> ContentKey:
    """The key of ``key_server_url`` for this job's key id (made once, so a retry asks for the same)."""
    existing = content_key_get(job_id=ctx.job_id)
    key_id = existing.key_id if existing is not None and existing.key_id else secrets.token_hex(16)
    try:
        answer = cpix.fetch_keys(
            p["key_server_url"], content_id=p["content_id"], key_id=key_id, scheme=mode, systems=systems
        )
    except cpix.CpixError as exc:
        raise TransientError(f"key server: {exc}") from None
    if existing is not None and existing.key_hex() != answer.key:
        raise PermanentError("the key server gave another key for this job's key id than before")
    signalling["pssh"] = answer.pssh
    if answer.fairplay_uri:
        signalling["fairplay_uri"] = answer.fairplay_uri
    return content_key_make(
        job_id=ctx.job_id, kind=mode, systems=systems, key_id=key_id, key_hex=answer.key, source="cpix"
    )


# What the language codes of the most common tracks are called when a track has no title.
LANGUAGE_NAMES = {
    "en": "English", "eng": "English", "fr": "Français", "fra": "Français", "fre": "Français",
    "de": "Deutsch", "deu": "Deutsch", "ger": "Deutsch", "es": "Español", "spa": "Español",
    "it": "Italiano", "ita": "Italiano", "pt": "Português", "por": "Português", "nl": "Nederlands",
    "nld": "Nederlands", "dut": "Nederlands", "ja": "Japanese", "jpn": "Japanese", "zh": "Chinese",
    "zho": "Chinese", "chi": "Chinese", "ar": "Arabic", "ara": "Arabic", "ru": "Russian", "rus": "Russian",
}  # fmt: skip
MAX_SIDECAR_BYTES = 5 * 1024 * 1024


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name} {number}", number + 1
    taken.add(candidate)
    return candidate


def _track_name(title: str, language: str, fallback: str) -> str:
    return (
        title
        or LANGUAGE_NAMES.get(language.split("-")[0].lower(), "")
        or (language if language != "und" else fallback)
    )


def _sniff_text(path: Path, where: str) -> str:
    """The ffmpeg demuxer for a staged sidecar: ``webvtt`` or ``srt``, by what the file holds."""
    data = path.read_bytes()
    if len(data) > MAX_SIDECAR_BYTES:
        raise PermanentError(f"{where}: larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PermanentError(f"{where}: not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and (lines[0] == "WEBVTT" or lines[0].startswith(("WEBVTT ", "WEBVTT\t"))):
        return "webvtt"
    if len(lines) >= 2 and lines[0].isdigit() and "-->" in lines[1]:
        return "srt"
    raise PermanentError(f"{where}: neither WebVTT nor SubRip (SRT)")


def plan_tracks(ctx: StepContext, p: dict[str, Any], sources: Sources) -> commands.Plan:
    """Every track the output carries, and what it leaves out with the reason (for the job's log).

    Video: the ladder, capped at the source. Audio: every track of the source, named by its title or
    language, stereo at most, loudness-normalised in two passes when ``loudness_target`` is set. Text:
    every text subtitle track of the source (unless ``source_text_tracks`` is false) and every sidecar
    of ``text_tracks``, as WebVTT; bitmap subtitles cannot become text and are reported as left out.
    """
    info = sources.info
    plan = commands.Plan(renditions=commands.ladder_for(info, int(p["renditions"])))
    names: set[str] = set()
    default_audio = next((t.index for t in info.audio if t.default), 0)
    for track in info.audio:
        plan.audio.append(
            commands.AudioOut(
                index=track.index,
                language=track.language,
                name=_unique(_track_name(track.title, track.language, f"Audio {track.index + 1}"), names),
                channels=max(1, min(track.channels or 2, 2)),
                default=track.index == default_audio,
            )
        )
    target = p.get("loudness_target")
    if target and plan.audio:
        plan.audio = _loudness(ctx, sources, plan.audio, tuple(target))
    names = set()
    if p.get("source_text_tracks", True):
        for text in info.text:
            if not text.is_text:
                plan.left_out.append(
                    f"text track {text.index + 1} ({text.codec}, {text.language}) is left out: bitmap "
                    "subtitles cannot become WebVTT"
                )
                continue
            plan.text.append(
                commands.TextOut(
                    key=f"text_{text.index}",
                    language=text.language,
                    name=_unique(
                        _track_name(text.title, text.language, f"Subtitles {text.index + 1}"), names
                    ),
                    default=text.default,
                    forced=text.forced,
                    stream=text.index,
                )
            )
    elif info.text:
        plan.left_out.append(f"{len(info.text)} text track(s) of the source: source_text_tracks is false")
    src = storage.source_storage(ctx)
    for index, sidecar in enumerate(p.get("text_tracks") or []):
        where = f"text_tracks[{index}].file"
        local = storage.work_dir(ctx, "sources") / f"sidecar{index:02d}.txt"
        storage.stage(src, storage.normalise_key(sidecar["file"]), local)
        plan.text.append(
            commands.TextOut(
                key=f"sidecar_{index}",
                language=sidecar["language"],
                name=_unique(sidecar["name"], names),
                default=bool(sidecar["default"]),
                forced=bool(sidecar["forced"]),
                sidecar=local,
                sidecar_format=_sniff_text(local, where),
            )
        )
    return plan


def _loudness(
    ctx: StepContext, sources: Sources, tracks: list[commands.AudioOut], target: tuple[float, float, float]
) -> list[commands.AudioOut]:
    """The first loudnorm pass (one decode measures every track); each track gets its second pass."""
    args = commands.loudnorm_analysis_args(sources.input_args, [t.index for t in tracks], target)
    run = run_ffmpeg(
        args, ctx, duration=sources.info.duration, label="loudness analysis", progress_span=(0, 15)
    )
    measured = commands.parse_loudnorm(run.stderr)
    if len(measured) != len(tracks):
        raise PermanentError(f"loudness analysis measured {len(measured)} of {len(tracks)} audio track(s)")
    done = []
    for n, track in enumerate(tracks):
        figures = measured[n]
        ctx.log(
            f"Audio {track.name}: {figures.get('input_i')} LUFS, {figures.get('input_tp')} dBTP measured; "
            f"normalising to {target[0]:g} LUFS, {target[1]:g} dBTP"
        )
        done.append(dataclasses.replace(track, loudnorm=commands.loudnorm_filter(target, figures)))
    return done


def _protection(
    ctx: StepContext, p: dict[str, Any], content_key: ContentKey | None
) -> commands.Protection | None:
    if content_key is None or content_key.kind == ContentKey.Kind.AES:
        return None
    encryption = ctx.results.get("prepare_encryption") or {}
    pssh: dict[str, str] = encryption.get("pssh") or {}
    return commands.Protection(
        scheme=content_key.kind,
        key_id=content_key.key_id,
        key=content_key.key_hex(),
        systems=tuple(p["drm_systems"]),
        pssh="".join(pssh[s] for s in sorted(pssh)),
        pssh_systems=tuple(sorted(pssh)),
        fairplay_uri=str(encryption.get("fairplay_uri") or p.get("fairplay_key_uri") or ""),
    )


@step("transcode_hls")
def transcode_hls(ctx: StepContext) -> dict[str, Any]:
    """Encodes the sources into the rendition ladder and every audio and text track (one ffmpeg run),
    packages them with Shaka Packager (CMAF segments named by HLS media playlists and a DASH MPD, or
    MPEG-TS HLS for AES-128) encrypted as ``prepare_encryption`` decided, and publishes every segment
    and media playlist; ``write_master`` publishes the master playlist and the MPD that name them."""
    p = params(ctx)
    for name in toolchain.SUPPORTED:
        toolchain.tool(name)
    sources = ensure_sources(ctx, p)
    info = sources.info
    prefix = p["content_id"]
    formats = tuple(p["formats"])
    container = "ts" if p["drm"] == "aes" else "cmaf"
    iframes = bool(p["iframe_playlists"]) and container == "cmaf" and "hls" in formats
    plan = plan_tracks(ctx, p, sources)
    for line in plan.left_out:
        ctx.log(line.capitalize() if line[:1].islower() else line)
    layout = commands.Layout(prefix, container)
    segment = float(p["segment_duration"])
    _fresh_dir(ctx, commands.ENCODED)
    out = _fresh_dir(ctx, "out")
    ctx.log(
        f"Encoding {info.duration:.1f} s into {len(plan.renditions)} rendition(s) "
        f"({', '.join(f'{r.width}x{r.height}' for r in plan.renditions)}), {len(plan.audio)} audio and "
        f"{len(plan.text)} text track(s)"
    )
    start = 15.0 if p.get("loudness_target") and plan.audio else 0.0
    run = run_ffmpeg(
        commands.encode_args(sources.input_args, plan, segment_duration=segment, preset=p["video_preset"]),
        ctx,
        duration=info.duration,
        label="encode",
        progress_span=(start, 80),
        cwd=storage.work_dir(ctx),
    )
    content_key = _content_key(ctx, p["drm"])
    protection = _protection(ctx, p, content_key)
    mpd_name = Path(p["dash_manifest_name"]).name
    args = commands.packager_args(
        plan,
        layout,
        formats=formats,
        segment_duration=segment,
        mpd_name=mpd_name,
        protection=protection,
        iframes=iframes,
        default_language=next((a.language for a in plan.audio if a.default), ""),
    )
    # The key reaches the packager through a private flag file in the work dir (never ``out``, which
    # is published), gone as soon as the packager is.
    keys = _fresh_dir(ctx, "keys")
    try:
        if protection is not None:
            flagfile = _private_file(keys / "packager.flags", protection.flagfile().encode())
            args.append(f"--flagfile={flagfile}")
        packaged = run_packager(args, ctx, label="packaging", progress_span=(80, 92), cwd=out)
    finally:
        shutil.rmtree(keys, ignore_errors=True)
    if protection is not None:
        packaging.fix_key_tags(packaging.media_playlists(out, plan, layout, iframes=iframes), protection)
    elif content_key is not None:
        count = packaging.encrypt_aes128(
            packaging.media_playlists(out, plan, layout, iframes=False),
            key=bytes.fromhex(content_key.key_hex()),
            iv=bytes.fromhex(content_key.iv),
            key_uri=content_key.key_uri,
        )
        ctx.log(f"AES-128: {count} segment(s) encrypted")
    manifests: dict[str, dict[str, str]] = {}
    variants: list[dict[str, Any]] = []
    if "hls" in formats:
        text, variants = packaging.write_master(
            out, plan, layout, segment_duration=segment, fps=info.fps, iframes=iframes
        )
        manifests["hls"] = {"name": Path(p["manifest_name"]).name, "text": text}
        (out / commands.PACKAGER_MASTER).unlink()
    if "dash" in formats:
        manifests["dash"] = {"name": mpd_name, "text": (out / mpd_name).read_text()}
        (out / mpd_name).unlink()
    taken = {m["name"] for m in manifests.values()} & {path.name for path in out.iterdir()}
    if taken:
        raise PermanentError(f"manifest name {sorted(taken)[0]} is also the name of a media playlist")
    written = storage.publish_folder(storage.destination_storage(ctx), out, p["output_folder"])
    ctx.log(
        f"Encode took {run.seconds:.2f} s ({info.duration / max(run.seconds, 1e-6):.2f}x real time), "
        f"packaging {packaged.seconds:.2f} s; {', '.join(formats)} from "
        f"{'MPEG-TS' if container == 'ts' else 'CMAF'} segments"
    )
    return {
        "variants": variants,
        "renditions": [r.name for r in plan.renditions],
        "audio": [{"language": a.language, "name": a.name, "channels": a.channels} for a in plan.audio],
        "text": [{"language": t.language, "name": t.name} for t in plan.text],
        "left_out": plan.left_out,
        "formats": list(formats),
        "segment_type": "mpegts" if container == "ts" else "fmp4",
        "manifests": manifests,
        "written": written,
        "media_duration": info.duration,
    }


def _content_key(ctx: StepContext, drm: str) -> ContentKey | None:
    """The key ``prepare_encryption`` made for this job (None for clear output)."""
    if drm == "clear":
        return None
    encryption = ctx.results.get("prepare_encryption") or {}
    content_key = content_key_get(job_id=ctx.job_id)
    if encryption.get("drm") != drm or content_key is None or content_key.kind != drm:
        raise PermanentError(f"drm {drm} needs the prepare_encryption step before transcode_hls")
    if drm == ContentKey.Kind.AES and not content_key.key_uri.isprintable():
        raise PermanentError("the job's key_uri holds control characters")
    try:
        content_key.key_hex()
    except SecretUnreadable:
        # Retrying cannot help: the key it was made with is gone from the configuration.
        raise PermanentError("the job's content key cannot be decrypted with the configured keys") from None
    return content_key


def _private_file(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return path


@step("write_master")
def write_master(ctx: StepContext) -> dict[str, Any]:
    """Writes the HLS master playlist (``manifest_name``) and the DASH MPD (``dash_manifest_name``),
    once every segment and media playlist they name is published."""
    p = params(ctx)
    encoded = ctx.results.get("transcode_hls")
    if not isinstance(encoded, dict) or not encoded.get("manifests"):
        raise PermanentError("write_master needs the transcode_hls step before it")
    dest = storage.destination_storage(ctx)
    written = []
    for kind in ("hls", "dash"):
        manifest = encoded["manifests"].get(kind)
        if manifest:
            key = _output_key(p, Path(manifest["name"]).name)
            dest.write_bytes(key, manifest["text"].encode())
            written.append(key)
    return {"manifest": written[0], "written": written, "media_duration": encoded.get("media_duration")}


@step("create_thumbnail")
def create_thumbnail(ctx: StepContext) -> dict[str, Any]:
    """Writes a JPEG of the frame at ``thumbnail_time`` (skipped when that parameter is not set)."""
    p = params(ctx)
    if p.get("thumbnail_time") is None:
        return _skipped("thumbnail_time is not set", ctx, "thumbnail")
    sources = ensure_sources(ctx, p)
    key = _grab_frame(ctx, p, sources, float(p["thumbnail_time"]), p["thumbnail_filename"], width=None)
    return {"written": [key], "thumbnail": key}


@step("create_mp4")
def create_mp4(ctx: StepContext) -> dict[str, Any]:
    """Writes the sources as one MP4 (``mp4_filename``): a stream copy when they hold H.264/AAC.

    In ``vodstream`` it runs only with ``generate_mp4``; the ``createmp4`` definition sets that itself.
    """
    p = params(ctx)
    if not p.get("generate_mp4"):
        return _skipped("generate_mp4 is false", ctx, "MP4")
    sources = ensure_sources(ctx, p)
    out = _fresh_dir(ctx, "mp4") / Path(p["mp4_filename"]).name
    args = commands.mp4_args(sources.input_args, sources.info, out, preset=p["video_preset"])
    run_ffmpeg(args, ctx, duration=sources.info.duration, label="MP4")
    key = _output_key(p, p["mp4_filename"])
    storage.destination_storage(ctx).upload(out, key)
    return {
        "written": [key],
        "primary": key,
        "media_duration": probe(out, work_dir=storage.work_dir(ctx)).duration,
    }


# --- small workflows ----------------------------------------------------------------------------------


def _grab_frame(
    ctx: StepContext, p: dict[str, Any], sources: Sources, at: float, filename: str, width: int | None
) -> str:
    if at > sources.info.duration:
        raise PermanentError(f"time {at:g} s is past the end of the source ({sources.info.duration:.2f} s)")
    out = _fresh_dir(ctx, "frame") / Path(filename).name
    # -ss before -i seeks to the keyframe before, then decodes up to ``at``: exact and fast.
    video_filter = ["-vf", f"scale={width}:-2"] if width else []
    args = ["-ss", f"{at:.3f}", *sources.input_args, "-map", "0:v:0", "-frames:v", "1", *video_filter]
    run_ffmpeg([*args, "-q:v", "2", "-update", "1", str(out)], ctx, label="frame")
    if not out.is_file():
        raise PermanentError(f"no frame at {at:g} s")
    key = _output_key(p, filename)
    storage.destination_storage(ctx).upload(out, key)
    return key


@step("capture_frame")
def capture_frame(ctx: StepContext) -> dict[str, Any]:
    """Writes the frame at ``frame_time`` as a JPEG (``frame_filename``; ``width`` only if given)."""
    p = params(ctx)
    if p.get("frame_time") is None:
        raise PermanentError("parameters.frame_time: is required")
    sources = ensure_sources(ctx, p)
    # ``width`` defaults to a GIF's width; a frame keeps the source's size unless one is asked for.
    width = int(p["width"]) if ctx.param("width") is not None else None
    key = _grab_frame(ctx, p, sources, float(p["frame_time"]), p["frame_filename"], width=width)
    return {"written": [key], "primary": key, "media_duration": sources.info.duration}


@step("generate_gif")
def generate_gif(ctx: StepContext) -> dict[str, Any]:
    """Writes an animated GIF of ``duration`` source seconds from ``start_at``, at ``fps`` frames a
    second, ``width`` pixels wide, played ``playback_speed`` times faster (one palette per GIF)."""
    p = params(ctx)
    sources = ensure_sources(ctx, p)
    start, length = float(p["start_at"]), float(p["duration"])
    speed, fps, width = float(p["playback_speed"]), float(p["fps"]), int(p["width"])
    if start >= sources.info.duration:
        raise PermanentError(f"start_at {start:g} s is past the end of the source")
    length = min(length, sources.info.duration - start)
    out = _fresh_dir(ctx, "gif") / Path(p["gif_filename"]).name
    graph = (
        f"[0:v]setpts=(PTS-STARTPTS)/{speed:g},fps={fps:g},scale={width}:-1:flags=lanczos,split[a][b];"
        "[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer"
    )
    args = ["-ss", f"{start:.3f}", "-t", f"{length:.3f}", *sources.input_args, "-filter_complex", graph]
    run_ffmpeg([*args, "-loop", "0", str(out)], ctx, duration=length / speed, label="GIF")
    key = _output_key(p, p["gif_filename"])
    storage.destination_storage(ctx).upload(out, key)
    return {"written": [key], "primary": key, "media_duration": round(length / speed, 3)}


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


@step("build_thumbnails")
def build_thumbnails(ctx: StepContext) -> dict[str, Any]:
    """Writes a thumbnail every ``preview_thumbnails_interval`` seconds (``thumbnail_width`` wide) and a
    WebVTT index (``thumbnails_vtt``) whose cues name the thumbnail for each stretch of the video."""
    p = params(ctx)
    sources = ensure_sources(ctx, p)
    interval, duration = float(p["preview_thumbnails_interval"]), sources.info.duration
    out = _fresh_dir(ctx, "thumbnails")
    prefix = f"{p['content_id']}_thumb_"
    # The first frame at or after each multiple of the interval: one thumbnail per cue, none missing.
    select = f"select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{interval:g}-0.001)'"
    args = [
        *sources.input_args,
        "-map",
        "0:v:0",
        "-vf",
        f"{select},scale={int(p['thumbnail_width'])}:-2",
        "-fps_mode",
        "vfr",
        "-q:v",
        "4",
        "-threads",
        encoder_threads(),
        str(out / f"{prefix}%05d.jpg"),
    ]
    run_ffmpeg(args, ctx, duration=duration, label="thumbnails")
    images = sorted(out.glob(f"{prefix}*.jpg"))
    if not images:
        raise PermanentError("no thumbnail was made")
    cues = ["WEBVTT", ""]
    for index, image in enumerate(images):
        begin, end = index * interval, min((index + 1) * interval, duration)
        if begin >= duration:
            image.unlink()
            continue
        cues += [f"{_vtt_time(begin)} --> {_vtt_time(end)}", image.name, ""]
    (out / Path(p["thumbnails_vtt"]).name).write_text("\n".join(cues))
    written = storage.publish_folder(storage.destination_storage(ctx), out, p["output_folder"])
    vtt = _output_key(p, Path(p["thumbnails_vtt"]).name)
    return {"written": written, "primary": vtt, "thumbnails": len(images), "media_duration": duration}


# --- vodcapture ---------------------------------------------------------------------------------------


@dataclass
class StagedClip:
    input_args: list[str]
    start: float  # seconds into the staged input
    duration: float


def _live_edge_reached(fetched: hls.FetchedStream, clip: Clip) -> bool:
    if not isinstance(clip.end, datetime) or fetched.program_date_time is None:
        return True
    stream_end = fetched.program_date_time.timestamp() + fetched.duration
    return stream_end >= clip.end.timestamp() - 0.001


def ensure_clips(ctx: StepContext, p: dict[str, Any]) -> list[StagedClip]:
    """Stage every clip's source (the part of an HLS stream it needs); a staged clip is reused.

    An HLS source is staged by ``hls.fetch_hls`` and read through the playlist it writes; a file
    source must be MP4, MPEG-TS or Matroska by its first bytes and is opened with that demuxer.
    """
    try:
        clips = parse_clips(p.get("clips"))
    except DomainError as exc:
        raise PermanentError(exc.message) from None
    staged = []
    retries = int(p["retries"])
    for index, clip in enumerate(clips):
        folder = storage.work_dir(ctx, f"clips/{index}")
        marker = folder / "staged.json"
        if marker.is_file():
            saved = json.loads(marker.read_text())
            staged.append(StagedClip(saved["input_args"], saved["start"], saved["duration"]))
            continue
        ctx.heartbeat(progress=100.0 * index / len(clips))
        path_part = clip.source.split("?", 1)[0].lower()
        if path_part.endswith(".m3u8"):
            fetcher: hls.Fetcher = (
                hls.HttpFetcher(retries=retries, ctx=ctx)
                if clip.is_url
                else hls.StorageFetcher(storage.source_storage(ctx))
            )
            source = clip.source if clip.is_url else storage.normalise_key(clip.source)
            fetched = hls.fetch_hls(source, folder, fetcher, start=clip.start, end=clip.end)
            if not _live_edge_reached(fetched, clip):
                raise TransientError(f"clip {index}: the stream has not reached the clip's end yet")
            if isinstance(clip.start, datetime) and isinstance(clip.end, datetime):
                assert fetched.program_date_time is not None
                start = (clip.start - fetched.program_date_time).total_seconds()
                length = (clip.end - clip.start).total_seconds()
            else:
                assert isinstance(clip.start, float) and isinstance(clip.end, float)
                start, length = clip.start - fetched.offset, clip.end - clip.start
            args = [*PLAYLIST_INPUT, "-i", str(fetched.playlist)]
        else:
            assert isinstance(clip.start, float) and isinstance(clip.end, float)
            # Staged under a neutral name, then named and opened after what it really holds.
            download = folder / "source.download"
            if clip.is_url:
                hls.fetch_file(clip.source, download, retries=retries, ctx=ctx)
            else:
                storage.stage(storage.source_storage(ctx), clip.source, download)
            found = containers.require(download, containers.CLIP_CONTAINERS, f"clip {index}'s source")
            target = folder / f"source{found.suffix}"
            os.replace(download, target)
            args = [*containers.input_options(found), "-i", str(target)]
            start, length = clip.start, clip.end - clip.start
        marker.write_text(json.dumps({"input_args": args, "start": max(0.0, start), "duration": length}))
        staged.append(StagedClip(args, max(0.0, start), length))
    return staged


def _capture(ctx: StepContext, *, accurate: bool) -> dict[str, Any]:
    p = params(ctx)
    clips = ensure_clips(ctx, p)
    cut_dir = _fresh_dir(ctx, "cut")
    first = None
    parts = []
    total = sum(clip.duration for clip in clips)
    done = 0.0
    for index, clip in enumerate(clips):
        part = cut_dir / f"part{index:03d}.ts"
        span = (80.0 * done / total, 80.0 * (done + clip.duration) / total)
        input_options = clip.input_args[:-2]
        source = clip.input_args[-1]
        info = probe(source, work_dir=storage.work_dir(ctx), input_options=tuple(input_options))
        first = first or info
        # No seek at all for a clip that starts where its staged stream does: ffmpeg 8's HLS demuxer
        # takes a seek's target (the stream's first timestamp plus the offset) as playlist time, which
        # for fMP4 segments whose timestamps do not start at 0 lands a whole segment late.
        seek = ["-ss", f"{clip.start:.3f}"] if clip.start >= 0.001 else []
        args = [*input_options, *seek, "-i", source, "-t", f"{clip.duration:.3f}"]
        args += ["-map", "0:v:0"] + (["-map", "0:a:0"] if first.has_audio and info.has_audio else [])
        if accurate:
            # Every clip is brought to the first clip's picture size and frame rate, so they join.
            fit = (
                f"scale={first.width}:{first.height}:force_original_aspect_ratio=decrease,"
                f"pad={first.width}:{first.height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={first.fps:g}"
            )
            args += ["-vf", fit, "-c:v", "libx264", "-preset", p["video_preset"], "-pix_fmt", "yuv420p"]
            args += ["-threads", encoder_threads(), *commands.keyframe_args(float(p["segment_duration"]))]
            args += ["-c:a", "aac", "-b:a", commands.AUDIO_BITRATE, "-ac", "2", "-ar", "48000"]
        else:
            args += ["-c", "copy", "-avoid_negative_ts", "make_zero"]
        run_ffmpeg(
            [*args, "-f", "mpegts", str(part)],
            ctx,
            duration=clip.duration,
            label=f"clip {index}",
            progress_span=span,
        )
        parts.append(part)
        done += clip.duration
    listing = cut_dir / "clips.ffconcat"
    _write_ffconcat(listing, parts)
    out = _fresh_dir(ctx, "vod")
    prefix = p["content_id"]
    seg = float(p["segment_duration"])
    manifest_name = Path(p["manifest_name"]).name
    args = [*concat_input(containers.MPEGTS), "-i", str(listing), "-map", "0", "-c", "copy"]
    args += ["-f", "hls", "-hls_time", f"{seg:g}", "-hls_playlist_type", "vod"]
    args += ["-hls_segment_filename", f"{prefix}_%05d.ts", manifest_name]
    if p.get("generate_mp4"):
        args += ["-map", "0", "-c", "copy", "-movflags", "+faststart", Path(p["mp4_filename"]).name]
    run_ffmpeg(args, ctx, duration=total, label="stitch", progress_span=(80, 95), cwd=out)
    duration = probe(out / manifest_name, work_dir=storage.work_dir(ctx)).duration
    written = storage.publish_folder(storage.destination_storage(ctx), out, p["output_folder"])
    ctx.log(
        f"Captured {len(clips)} clip(s) into {duration:.2f} s ({'re-encoded' if accurate else 'stream copy'})"
    )
    return {"manifest": _output_key(p, manifest_name), "written": written, "media_duration": duration}


@step("fetch_clips")
def fetch_clips(ctx: StepContext) -> dict[str, Any]:
    """Fetches each clip's source (HLS or MP4 URL through the outbound guard, or a storage path)."""
    p = params(ctx)
    clips = ensure_clips(ctx, p)
    return {"clips": len(clips), "media_duration": round(sum(c.duration for c in clips), 3)}


@step("capture_clips")
def capture_clips(ctx: StepContext) -> dict[str, Any]:
    """Cuts the clips by stream copy (at keyframes) and stitches them into one HLS VOD (and MP4 with
    ``generate_mp4``); does nothing when ``frame_accurate``, which ``capture_clips_accurate`` handles."""
    if params(ctx).get("frame_accurate"):
        return _skipped("frame_accurate: capture_clips_accurate cuts the clips")
    return _capture(ctx, accurate=False)


@step("capture_clips_accurate", queue="windows_capture")
def capture_clips_accurate(ctx: StepContext) -> dict[str, Any]:
    """Cuts the clips to the exact frame by re-encoding, then stitches them like ``capture_clips``;
    runs only with ``frame_accurate`` (on the ``windows_capture`` queue)."""
    if not params(ctx).get("frame_accurate"):
        return _skipped("not frame_accurate: capture_clips cut the clips")
    return _capture(ctx, accurate=True)
