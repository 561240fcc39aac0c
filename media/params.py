"""The media workflows' documented parameters: defaults, template substitution and validation.

Defaults may refer to other parameters (``output_folder`` defaults to ``{source_folder}``,
``mp4_filename`` to ``{content_id}.mp4``); any string parameter may do the same. ``validate_parameters``
runs at submission and raises ``DomainError`` (answered 400) for input no step could use; the steps call
``resolve_parameters`` again on what they receive, so a client definition's step parameters get the same
treatment.

Everything a parameter becomes downstream is decided here, once: what turns into a path stays inside the
client's area, what turns into a file name or an ffmpeg argument has no control characters and a safe
character set, every output keeps the extension its workflow makes (a name is also a content type once
storage is served from a web origin), and templates are expanded within bounds, so a small body cannot
make the web process or a worker build megabytes of text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from taskengine_site import outbound
from taskengine_site.errors import DomainError
from taskengine_site.inputs import has_control

# ``cenc`` is the engine's older name for ClearKey; the key systems combine (multi-DRM), ``aes``
# (HLS AES-128 over MPEG-TS) and ``clear`` stand alone.
SUPPORTED_DRM = ("clear", "aes", "cenc", "clearkey", "widevine", "playready", "fairplay")
KEY_SYSTEMS = ("clearkey", "widevine", "playready", "fairplay")
ENCRYPTION_SCHEMES = ("cenc", "cbcs")
FORMATS = ("hls", "dash")
LOUDNESS_STANDARDS = ("ebu_r128", "atsc_a85")
MAX_TEXT_TRACKS = 20
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
MAX_CLIPS = 50


@dataclass(frozen=True)
class Param:
    kind: str  # str, number, int, bool, list, any
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


PARAMS: dict[str, Param] = {
    "content_id": Param("str"),
    "source_folder": Param("str"),
    "source_file": Param("str"),
    "output_folder": Param("str", "{source_folder}"),
    "source_storage": Param("str", "local", choices=("local", "s3")),
    "destination_storage": Param("str", "local", choices=("local", "s3")),
    "retries": Param("int", 2, 0, 10),
    "drm": Param("any", ["clear"]),
    # No default: keys are never published with the content, so only the client knows where its
    # players fetch them from.
    "key_uri": Param("str"),
    "manifest_name": Param("str", "{content_id}.m3u8"),
    "dash_manifest_name": Param("str", "{content_id}.mpd"),
    # Default: both from the same CMAF segments (HLS alone for AES-128, which is MPEG-TS).
    "formats": Param("any"),
    # Default: cbcs when FairPlay is one of the systems (it knows no other), else cenc.
    "encryption_scheme": Param("str", None, choices=ENCRYPTION_SCHEMES),
    # A CPIX key server the content key (and the key systems' signalling) comes from.
    "key_server_url": Param("str"),
    # FairPlay's key URI (skd://…) in the HLS key tags, when no key server gives one.
    "fairplay_key_uri": Param("str"),
    "iframe_playlists": Param("bool", True),
    "source_text_tracks": Param("bool", True),
    "text_tracks": Param("list"),
    "loudness_target": Param("any"),
    "segment_duration": Param("number", 6, 1, 60),
    "renditions": Param("int", 3, 1, 5),
    "video_preset": Param("str", "veryfast", choices=X264_PRESETS),
    "thumbnail_time": Param("number", None, 0, 86_400),
    "thumbnail_filename": Param("str", "{content_id}.jpg"),
    "generate_mp4": Param("bool", False),
    "mp4_filename": Param("str", "{content_id}.mp4"),
    "clips": Param("list"),
    "frame_accurate": Param("bool", False),
    "frame_time": Param("number", None, 0, 86_400),
    "frame_filename": Param("str", "{content_id}_frame.jpg"),
    "start_at": Param("number", 0, 0, 86_400),
    "duration": Param("number", 3, 0.1, 60),
    "fps": Param("number", 10, 1, 60),
    "width": Param("int", 320, 16, 3840),
    "playback_speed": Param("number", 1.0, 0.25, 4.0),
    "gif_filename": Param("str", "{content_id}.gif"),
    "preview_thumbnails_interval": Param("number", 10, 0.5, 3600),
    "thumbnail_width": Param("int", 160, 16, 1920),
    "thumbnails_vtt": Param("str", "{content_id}_thumbnails.vtt"),
}

REQUIRED: dict[str, tuple[str, ...]] = {
    "vodstream": ("content_id", "source_folder"),
    "vodcapture": ("content_id", "output_folder", "clips"),
    "createmp4": ("content_id", "source_folder"),
    "capture_frame": ("content_id", "source_folder", "frame_time"),
    "generate_gif": ("content_id", "source_folder"),
    "build_thumbnails": ("content_id", "source_folder"),
}
MEDIA_WORKFLOWS = tuple(REQUIRED)

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


MAX_PATH_CHARS = 1024
MAX_KEY_URI_CHARS = 2000
# References through references: ``output_folder`` → ``{source_folder}`` → ``{content_id}`` is three;
# ten leaves room for any honest layout and cuts a chain of hundreds off after ten lookups.
MAX_TEMPLATE_DEPTH = 10
# What one expanded value may grow to. Every value that is used is bounded more tightly after expansion
# (a path 1,024, a name 128 or 200, a key URI 2,000); this bound stops the expansion itself while it runs.
MAX_TEMPLATE_CHARS = 4096

# Content ids and output names become file names, segment name patterns handed to ffmpeg (so no '%'),
# and object keys whose extension picks the content type storage serves them with.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_CONTENT_ID_CHARS = 128
# Longer than a content id, so the default names made from one ("{content_id}_thumbnails.vtt") fit, and
# short enough that the steps' own names made from them stay under a file system's 255 bytes.
MAX_OUTPUT_NAME_CHARS = 200
# Every output name, with the extensions of the file its workflow makes there.
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "mp4_filename": (".mp4",),
    "thumbnail_filename": (".jpg", ".jpeg"),
    "frame_filename": (".jpg", ".jpeg"),
    "gif_filename": (".gif",),
    "thumbnails_vtt": (".vtt",),
    "manifest_name": (".m3u8",),
    "dash_manifest_name": (".mpd",),
}
PATH_PARAMS = ("source_folder", "output_folder", "source_file")
# Every parameter that becomes a path, a URL, a file name or a tool's argument (clips are checked one by
# one in ``parse_clips``).
TEXT_PARAMS = (
    "content_id",
    *PATH_PARAMS,
    *OUTPUT_NAMES,
    "key_uri",
    "storage_client",
    "key_server_url",
    "fairplay_key_uri",
)
KEY_URI_REQUIRED = (
    "required for drm aes: the URL your players fetch the key from (keys are never published with the "
    "content)"
)


def _fail(name: str, message: str) -> DomainError:
    return DomainError(f"parameters.{name}: {message}")


def check_text(name: str, value: Any) -> str:
    """A string parameter that becomes a path, URL, file name or tool argument: no control characters."""
    if not isinstance(value, str):
        raise _fail(name, "must be a string")
    if has_control(value):
        raise _fail(name, "must not contain control characters")
    return value


def check_output_name(name: str, value: Any, suffixes: tuple[str, ...] = ()) -> str:
    """A file name the workflow writes: a safe character set and, for an output, its own extension."""
    check_text(name, value)
    if not _SAFE_NAME.fullmatch(value):
        raise _fail(name, "must be letters, digits, '.', '_' or '-', starting with a letter or a digit")
    limit = MAX_OUTPUT_NAME_CHARS if suffixes else MAX_CONTENT_ID_CHARS
    if len(value) > limit:
        raise _fail(name, f"must be at most {limit} characters")
    if suffixes and not value.lower().endswith(suffixes):
        raise _fail(name, f"must end in {' or '.join(suffixes)}, the kind of file this workflow makes there")
    return value


def check_key_uri(value: Any) -> str:
    """The AES-128 key's URL as players fetch it.

    It is written into a playlist attribute (``URI="…"``) and as one line of ffmpeg's key-info file, so
    what could end either (a quote, a comma for naive attribute parsers, a line break, any control or
    space) is refused rather than escaped.
    """
    name = "key_uri"
    check_text(name, value)
    if len(value) > MAX_KEY_URI_CHARS:
        raise _fail(name, f"must be at most {MAX_KEY_URI_CHARS} characters")
    if any(ch.isspace() or ch in '",' for ch in value):
        raise _fail(name, "must not contain spaces, double quotes or commas")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a malformed port)
    except ValueError:
        raise _fail(name, "must be an absolute http(s) URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _fail(name, "must be an absolute http(s) URL")
    return value


def check_relative_path(name: str, value: Any) -> str:
    """A path inside the client's storage area: relative, without ``..``, backslashes or controls."""
    if not isinstance(value, str):
        raise _fail(name, "must be a path (a string)")
    if len(value) > MAX_PATH_CHARS:
        raise _fail(name, f"must be at most {MAX_PATH_CHARS} characters")
    if has_control(value):
        raise _fail(name, "must not contain control characters")
    if "\\" in value:
        raise _fail(name, "must use '/' between folders, not '\\'")
    if value.startswith("/"):
        raise _fail(name, "must be relative to the client's storage area, not absolute")
    if ".." in value.split("/"):
        raise _fail(name, "may not contain '..'")
    return value


def _coerce(name: str, spec: Param, value: Any) -> Any:
    if spec.kind == "str":
        if not isinstance(value, str):
            raise _fail(name, "must be a string")
        if spec.choices:
            lowered = value.lower()
            if lowered not in spec.choices:
                raise _fail(name, f"{value!r} is not supported (one of: {', '.join(spec.choices)})")
            return lowered
        return value
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _fail(name, "must be true or false")
    if spec.kind in ("number", "int"):
        if isinstance(value, bool):
            raise _fail(name, "must be a number")
        try:
            number = float(value) if spec.kind == "number" else int(str(value).strip())
        except (TypeError, ValueError):
            raise _fail(name, f"must be {'a number' if spec.kind == 'number' else 'an integer'}") from None
        if number != number or (spec.minimum is not None and number < spec.minimum):
            raise _fail(name, f"must be at least {spec.minimum:g}")
        if spec.maximum is not None and number > spec.maximum:
            raise _fail(name, f"must be at most {spec.maximum:g}")
        return number
    if spec.kind == "list" and not isinstance(value, list):
        raise _fail(name, "must be a list")
    return value


class _Templates:
    """Expands the templates of one set of parameters within bounds.

    Each parameter is expanded once and remembered, so references shared by many templates (``{b}{b}``
    at every level doubles the text) cost one expansion each; a chain of references stops after
    ``MAX_TEMPLATE_DEPTH`` (the recursion is never deeper than that); and an expansion stops as soon as
    it would pass ``MAX_TEMPLATE_CHARS``.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.expanded: dict[str, str] = {}
        # The chain of parameters being expanded, outermost first.
        self.chain: list[str] = []

    def expand(self, name: str) -> str:
        """The string parameter ``name`` with every reference replaced (``DomainError`` past a bound)."""
        done = self.expanded.get(name)
        if done is not None:
            return done
        text = self.values[name]
        if "{" not in text:
            return str(text)
        if len(self.chain) >= MAX_TEMPLATE_DEPTH:
            raise _fail(
                self.chain[0], f"templates refer to templates more than {MAX_TEMPLATE_DEPTH} levels deep"
            )
        self.chain.append(name)
        try:
            result = self._substitute(name, text)
        finally:
            self.chain.pop()
        self.expanded[name] = result
        return result

    def _substitute(self, name: str, text: str) -> str:
        parts: list[str] = []
        size = 0
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            ref = match.group(1)
            if ref in self.chain:
                raise _fail(name, f"{{{ref}}} refers back to itself")
            target = self.values.get(ref)
            if target is None:
                raise _fail(name, f"{{{ref}}} names a parameter that is not set")
            if isinstance(target, str):
                replacement = self.expand(ref)
            elif isinstance(target, bool) or not isinstance(target, int | float):
                raise _fail(name, f"{{{ref}}} is not a string or a number")
            else:
                try:
                    replacement = f"{target:g}"
                except OverflowError:  # an integer past a float's range
                    raise _fail(name, f"{{{ref}}} is too large a number") from None
            literal = text[position : match.start()]
            size += len(literal) + len(replacement)
            if size > MAX_TEMPLATE_CHARS:
                raise _fail(name, f"expands to more than {MAX_TEMPLATE_CHARS} characters")
            parts += (literal, replacement)
            position = match.end()
        parts.append(text[position:])
        result = "".join(parts)
        if len(result) > MAX_TEMPLATE_CHARS:
            raise _fail(name, f"expands to more than {MAX_TEMPLATE_CHARS} characters")
        return result


def resolve_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters with defaults filled in, templates substituted, values coerced to their type, and
    what each becomes checked (paths, names, the key URL): ``DomainError`` naming the parameter.

    Unknown parameters (``custom_data``, ``rest_endpoints``, …) are passed through untouched.
    """
    if not isinstance(parameters, dict):
        raise DomainError("parameters: must be an object")
    values = dict(parameters)
    defaulted = set()
    for name, spec in PARAMS.items():
        if values.get(name) is None and spec.default is not None:
            values[name] = list(spec.default) if isinstance(spec.default, list) else spec.default
            defaulted.add(name)
    for name, spec in PARAMS.items():
        if values.get(name) is not None:
            values[name] = _coerce(name, spec, values[name])
    templates = _Templates(dict(values))
    for name, spec in PARAMS.items():
        if spec.kind == "str" and isinstance(values.get(name), str) and "{" in values[name]:
            try:
                values[name] = templates.expand(name)
            except DomainError:
                if name not in defaulted:
                    raise
                # A default naming a parameter the job does not have (no source_folder) stays unset.
                values[name] = None
    mode, systems = drm_plan(values.get("drm"), values.get("encryption_scheme"))
    values["drm"], values["drm_systems"] = mode, list(systems)
    values["formats"] = check_formats(values.get("formats"), mode)
    if values.get("loudness_target") is not None:
        values["loudness_target"] = loudness_target(values["loudness_target"])
    if values.get("text_tracks") is not None:
        values["text_tracks"] = [asdict(track) for track in parse_text_tracks(values["text_tracks"])]
    _check_resolved(values)
    return values


def _check_resolved(values: dict[str, Any]) -> None:
    """Refuse what a resolved parameter would do harm as: a path, a file name, an ffmpeg argument."""
    for name in TEXT_PARAMS:
        if values.get(name) is not None:
            check_text(name, values[name])
    for name in PATH_PARAMS:
        if values.get(name) is not None:
            check_relative_path(name, values[name])
    if values.get("content_id") is not None:
        check_output_name("content_id", values["content_id"])
    for name, suffixes in OUTPUT_NAMES.items():
        if values.get(name) is not None:
            check_output_name(name, values[name], suffixes)
    if values.get("key_uri") is not None:
        check_key_uri(values["key_uri"])
    elif values["drm"] == "aes":
        raise _fail("key_uri", KEY_URI_REQUIRED)
    if values.get("key_server_url") is not None:
        check_key_server_url(values["key_server_url"])
    if values.get("fairplay_key_uri") is not None:
        check_fairplay_key_uri(values["fairplay_key_uri"])
    elif "fairplay" in values["drm_systems"] and values.get("key_server_url") is None:
        raise _fail(
            "fairplay_key_uri",
            "required for drm fairplay without a key_server_url: the skd:// URI your FairPlay players "
            "ask their key server for",
        )


def drm_plan(value: Any, scheme: Any = None) -> tuple[str, tuple[str, ...]]:
    """(mode, key systems) from the ``drm`` parameter (a name or a list) and ``encryption_scheme``.

    The mode is ``clear``, ``aes`` (HLS AES-128) or the common-encryption scheme (``cenc`` or
    ``cbcs``) the key systems share; ``cenc`` in the list names ClearKey, as it always has.
    """
    names = value if isinstance(value, list) else [value]
    if value is None or value == []:
        return "clear", ()
    chosen: list[str] = []
    for item in names:
        if not isinstance(item, str):
            raise _fail("drm", "must be a name or a list of names")
        check_text("drm", item)
        lowered = item.strip().lower()
        if lowered not in SUPPORTED_DRM:
            raise _fail("drm", f"{item!r} is not supported")
        lowered = "clearkey" if lowered == "cenc" else lowered
        if lowered not in chosen:
            chosen.append(lowered)
    if len(chosen) > 1 and ("clear" in chosen or "aes" in chosen):
        raise _fail("drm", f"clear and aes stand alone; got {', '.join(chosen)}")
    if chosen[0] in ("clear", "aes"):
        if scheme is not None:
            raise _fail(
                "encryption_scheme", f"applies to the key systems ({', '.join(KEY_SYSTEMS)}), not {chosen[0]}"
            )
        return chosen[0], ()
    systems = tuple(system for system in KEY_SYSTEMS if system in chosen)
    if scheme is None:
        scheme = "cbcs" if "fairplay" in systems else "cenc"
    if scheme not in ENCRYPTION_SCHEMES:
        raise _fail(
            "encryption_scheme", f"{scheme!r} is not supported (one of: {', '.join(ENCRYPTION_SCHEMES)})"
        )
    if scheme == "cenc" and "fairplay" in systems:
        raise _fail("encryption_scheme", "FairPlay needs cbcs")
    return str(scheme), systems


def drm_mode(value: Any) -> str:
    """``clear``, ``aes`` or the encryption scheme the ``drm`` parameter asks for."""
    return drm_plan(value)[0]


def check_formats(value: Any, mode: str) -> list[str]:
    """The manifests to write: ``hls``, ``dash`` or both (the default; HLS alone for AES-128)."""
    if value is None:
        return ["hls"] if mode == "aes" else list(FORMATS)
    items = value if isinstance(value, list) else [value]
    chosen: list[str] = []
    for item in items:
        if not isinstance(item, str) or has_control(item):
            raise _fail("formats", "must be a list of names without control characters")
        lowered = item.strip().lower()
        if lowered not in FORMATS:
            raise _fail("formats", f"{item!r} is not supported (any of: {', '.join(FORMATS)})")
        if lowered not in chosen:
            chosen.append(lowered)
    if not chosen:
        raise _fail("formats", f"must name at least one of {', '.join(FORMATS)}")
    if mode == "aes" and chosen != ["hls"]:
        raise _fail("formats", "drm aes is HLS AES-128 over MPEG-TS: DASH has no such protection")
    return chosen


def check_key_server_url(value: Any) -> str:
    """The CPIX key server's URL: an http(s) URL the outbound guard allows."""
    from taskengine_site import outbound

    check_text("key_server_url", value)
    if len(value) > MAX_KEY_URI_CHARS:
        raise _fail("key_server_url", f"must be at most {MAX_KEY_URI_CHARS} characters")
    outbound.validate_url(value, what="parameters.key_server_url")
    return str(value)


def check_fairplay_key_uri(value: Any) -> str:
    """FairPlay's ``skd://`` key URI, written into key tags: no quotes, commas, spaces or controls."""
    name = "fairplay_key_uri"
    check_text(name, value)
    if len(value) > MAX_KEY_URI_CHARS:
        raise _fail(name, f"must be at most {MAX_KEY_URI_CHARS} characters")
    if not value.startswith("skd://") or len(value) <= len("skd://"):
        raise _fail(name, "must be an skd:// URI")
    if any(ch.isspace() or ch in '",' for ch in value):
        raise _fail(name, "must not contain spaces, double quotes or commas")
    return str(value)


def loudness_target(value: Any) -> list[float]:
    """(integrated LUFS, true peak dBTP, loudness range LU) from a standard's name or a LUFS figure."""
    from media.commands import LOUDNESS_STANDARDS as TARGETS

    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, int | float) for v in value):
        return [float(v) for v in value]  # already resolved
    if isinstance(value, str) and value.strip().lower() in TARGETS:
        return list(TARGETS[value.strip().lower()])
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not -70 <= value <= -5:
            raise _fail("loudness_target", "a loudness in LUFS must be between -70 and -5")
        return [float(value), -1.0, 7.0]
    raise _fail(
        "loudness_target",
        f"must be {' or '.join(LOUDNESS_STANDARDS)}, or an integrated loudness in LUFS (-70 to -5)",
    )


@dataclass(frozen=True)
class SidecarText:
    file: str
    language: str
    name: str
    default: bool
    forced: bool


_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,3}")
# Letters of any script: a track's name is shown to viewers in their language.
_TRACK_NAME = re.compile(r"[^\W_][\w .()+-]{0,63}")


def parse_text_tracks(value: Any) -> list[SidecarText]:
    """``text_tracks``: sidecar SRT or WebVTT files in the client's area, each with its language."""
    if not isinstance(value, list):
        raise _fail("text_tracks", "must be a list")
    if len(value) > MAX_TEXT_TRACKS:
        raise _fail("text_tracks", f"at most {MAX_TEXT_TRACKS} text tracks")
    tracks = []
    for index, item in enumerate(value):
        where = f"text_tracks[{index}]"
        if isinstance(item, SidecarText):
            tracks.append(item)
            continue
        if not isinstance(item, dict):
            raise _fail(where, "must be an object with file and language")
        unknown = set(item) - {"file", "language", "name", "default", "forced"}
        if unknown:
            raise _fail(where, f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        file = check_relative_path(f"{where}.file", item.get("file"))
        if not file.lower().endswith((".srt", ".vtt")):
            raise _fail(f"{where}.file", "must be an .srt or .vtt file")
        language = item.get("language")
        if not isinstance(language, str) or not _LANGUAGE_TAG.fullmatch(language):
            raise _fail(f"{where}.language", "must be a language tag such as en, fr or pt-BR")
        name = item.get("name", language)
        if not isinstance(name, str) or not _TRACK_NAME.fullmatch(name):
            raise _fail(
                f"{where}.name",
                "must be 1 to 64 letters, digits, spaces or . _ ( ) + -, starting with a letter or digit",
            )
        flags = {}
        for flag in ("default", "forced"):
            flag_value = item.get(flag, False)
            if not isinstance(flag_value, bool):
                raise _fail(f"{where}.{flag}", "must be true or false")
            flags[flag] = flag_value
        tracks.append(SidecarText(file, language, name, flags["default"], flags["forced"]))
    return tracks


def parse_clip_time(value: Any, where: str) -> float | datetime:
    """A clip bound: seconds into the source (a number, ``"90.5"``, ``"00:01:30.5"``) or a UTC datetime."""
    if isinstance(value, bool):
        raise _fail(where, "must be seconds, hh:mm:ss or a date-time")
    if isinstance(value, int | float):
        if value < 0:
            raise _fail(where, "must not be negative")
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, "must be seconds, hh:mm:ss or a date-time")
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds:
            raise _fail(where, "must not be negative")
        return seconds
    clock = _CLOCK.match(text)
    if clock:
        hours, minutes, secs = clock.groups()
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(where, f"{value!r} is not seconds, hh:mm:ss or a date-time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Clip:
    source: str
    start: float | datetime
    end: float | datetime

    @property
    def is_url(self) -> bool:
        return self.source.lower().startswith(("http://", "https://"))

    @property
    def wall_clock(self) -> bool:
        return isinstance(self.start, datetime)


def parse_clips(value: Any) -> list[Clip]:
    """The ``clips`` parameter as ``Clip``s, refusing malformed ones and URLs the engine may not reach."""
    if not isinstance(value, list) or not value:
        raise _fail("clips", "must be a non-empty list")
    if len(value) > MAX_CLIPS:
        raise _fail("clips", f"at most {MAX_CLIPS} clips")
    clips = []
    for index, item in enumerate(value):
        where = f"clips[{index}]"
        if not isinstance(item, dict):
            raise _fail(where, "must be an object with source, start and end")
        source = item.get("source")
        if not isinstance(source, str) or not source.strip():
            raise _fail(f"{where}.source", "must be a URL or a storage path")
        # Before stripping: str.strip() removes some controls (U+001C-001F, U+0085) as whitespace.
        check_text(f"{where}.source", source)
        start = parse_clip_time(item.get("start"), f"{where}.start")
        end = parse_clip_time(item.get("end"), f"{where}.end")
        if isinstance(start, datetime) != isinstance(end, datetime):
            raise _fail(where, "start and end must both be offsets or both be date-times")
        if end <= start:  # type: ignore[operator]
            raise _fail(where, "end must be after start")
        clip = Clip(source=source.strip(), start=start, end=end)
        if clip.is_url:
            outbound.validate_url(clip.source, what=f"parameters.{where}.source")
        elif "://" in clip.source:
            raise _fail(f"{where}.source", "must be an http(s) URL or a storage path")
        elif clip.wall_clock:
            raise _fail(where, "date-time bounds need an HLS URL source (with program date-times)")
        else:
            check_relative_path(f"{where}.source", clip.source)
        clips.append(clip)
    return clips


def validate_parameters(workflow: str, parameters: Any) -> dict[str, Any]:
    """Refuse, with a ``DomainError`` naming the parameter, what the media ``workflow`` cannot run.

    Returns the resolved parameters. Workflows that are not media workflows are not checked.
    """
    if workflow not in MEDIA_WORKFLOWS:
        return parameters if isinstance(parameters, dict) else {}
    parameters = parameters or {}
    if not isinstance(parameters, dict):
        raise DomainError("parameters: must be an object")
    # Before resolving, which would first ask an encrypting job for its key URL.
    if workflow != "vodstream" and drm_mode(parameters.get("drm")) != "clear":
        raise _fail("drm", f"{workflow} makes clear output only")
    values = resolve_parameters(parameters)
    for name in REQUIRED[workflow]:
        value = values.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _fail(name, "is required")
    if workflow == "vodcapture":
        parse_clips(values["clips"])
    return values


def latest_future_clip_end(parameters: Any, now: datetime | None = None) -> datetime | None:
    """The latest clip ``end`` that is a date-time after ``now`` (the job should run then), else None.

    Malformed clips are ignored here: ``validate_parameters`` refuses them.
    """
    if not isinstance(parameters, dict) or not isinstance(parameters.get("clips"), list):
        return None
    moment = now or datetime.now(UTC)
    latest: datetime | None = None
    for index, item in enumerate(parameters["clips"]):
        if not isinstance(item, dict):
            continue
        try:
            end = parse_clip_time(item.get("end"), f"clips[{index}].end")
        except DomainError:
            continue
        if isinstance(end, datetime) and end > moment and (latest is None or end > latest):
            latest = end
    return latest
