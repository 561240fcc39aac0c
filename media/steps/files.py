"""Steps on the client's local storage area (``<TASKENGINE_STORAGE_ROOT>/<client>``, ``media.storage``):
``drmswitch``, ``voddelete`` and ``asset_delete``.

Every path a job names is relative to its client's area; a path that is absolute, or that resolves
(symbolic links included) outside the area, is refused with a permanent error.

DRM switch convention
---------------------
A VOD folder publishes each manifest under its plain name, ``<name>.m3u8`` (HLS) or ``<name>.mpd``
(DASH): that is the URL players use, and it never changes. The variant that is not being served is
parked beside it with an infix naming what it is:

- ``index.m3u8`` + ``index.drm.m3u8``   → the clear variant is published, the DRM one parked;
- ``index.m3u8`` + ``index.clear.m3u8`` → the DRM variant is published, the clear one parked.

Switching to DRM (``drm`` is a list of DRM systems, e.g. ``["widevine", "playready"]``) parks the
published clear manifest as ``index.clear.m3u8`` and publishes ``index.drm.m3u8`` as ``index.m3u8``;
switching to clear (``drm: ["clear"]``) does the reverse. A manifest without a parked variant (a
media playlist both variants share) is left alone.

``get_filenames`` lists the manifests and the state of each, ``prepare_switch`` plans the renames and
checks that every needed variant is there, ``rename_manifests`` carries them out. Each switch first
hard-links the published manifest to its parked name and then atomically replaces the published name
with the other variant, so the published name always exists; a retry after a crash between the two
finds the link and completes the switch, and a manifest already in the wanted state is skipped.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path
from typing import Any

from jobs.workflows.registry import PermanentError, StepContext, TransientError, step
from media import storage as media_storage
from taskengine_site.inputs import has_control

MANIFEST_SUFFIXES = (".m3u8", ".mpd")
VARIANTS = ("clear", "drm")
DRM_SYSTEMS = ("playready", "widevine", "fairplay", "cenc", "aes")


def _root(ctx: StepContext) -> Path:
    storage = ctx.param("source_storage") or ctx.param("destination_storage") or "local"
    if str(storage).lower() != "local":
        raise PermanentError(f"storage {storage!r} is not supported by this engine (only local)")
    return media_storage.client_root(ctx)


def resolve_path(root: Path, relative: Any, *, what: str) -> Path:
    """``relative`` under ``root``, refusing anything that escapes it: an absolute path, ``..``, or a
    folder on the way that is a symbolic link to outside. The last component is not followed, so an
    operation on a link acts on the link, never on what it points to."""
    if not isinstance(relative, str) or not relative.strip():
        raise PermanentError(f"{what}: a relative path is required")
    if has_control(relative):
        raise PermanentError(f"{what}: must not contain control characters")
    candidate = Path(relative)
    if candidate.is_absolute():
        raise PermanentError(f"{what}: {relative!r} must be relative to the client's storage area")
    if ".." in candidate.parts:
        raise PermanentError(f"{what}: {relative!r} must not contain '..'")
    if not candidate.parts:
        return root
    parent = (root / candidate).parent.resolve()
    if not parent.is_relative_to(root):
        raise PermanentError(f"{what}: {relative!r} is outside the client's storage area")
    return parent / candidate.name


def _folder(ctx: StepContext) -> tuple[Path, Path]:
    root = _root(ctx)
    folder = resolve_path(root, ctx.param("folder"), what="folder")
    if folder == root:
        raise PermanentError("folder: the storage area itself cannot be used")
    if folder.is_symlink():
        raise PermanentError(f"folder: {folder.relative_to(root).as_posix()!r} is a symbolic link")
    return root, folder


def _target(ctx: StepContext) -> str:
    drm = ctx.param("drm")
    if isinstance(drm, str):
        drm = [drm]
    if not isinstance(drm, list) or not drm or not all(isinstance(item, str) for item in drm):
        raise PermanentError('drm: a list such as ["widevine", "playready"] or ["clear"] is required')
    systems = {item.strip().lower() for item in drm}
    if systems == {"clear"}:
        return "clear"
    if "clear" in systems:
        raise PermanentError("drm: 'clear' cannot be combined with DRM systems")
    unknown = systems - set(DRM_SYSTEMS)
    if unknown:
        raise PermanentError(f"drm: unknown DRM systems {sorted(unknown)} (known: {', '.join(DRM_SYSTEMS)})")
    return "drm"


def _parked(published: Path, variant: str) -> Path:
    return published.with_name(f"{published.stem}.{variant}{published.suffix}")


def _is_variant_name(path: Path) -> bool:
    return any(path.name.endswith(f".{variant}{path.suffix}") for variant in VARIANTS)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def manifest_state(published: Path) -> str:
    """``clear`` or ``drm`` (what the published name serves), ``single`` (no parked variant),
    ``switching`` (interrupted between its two steps), ``ambiguous`` or ``missing`` (a parked variant
    without its published manifest)."""
    clear, drm = _parked(published, "clear"), _parked(published, "drm")
    has_clear, has_drm = clear.exists(), drm.exists()
    if not published.exists():
        return "missing"
    if has_clear and has_drm:
        if _same(published, clear) or _same(published, drm):
            return "switching"
        return "ambiguous"
    if has_drm:
        return "clear"
    if has_clear:
        return "drm"
    return "single"


def _list_manifests(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PermanentError(f"folder: {folder.name!r} does not exist")
    names: set[Path] = set()
    for path in folder.iterdir():
        if path.suffix not in MANIFEST_SUFFIXES or not path.is_file():
            continue
        if _is_variant_name(path):
            stem = path.stem.rsplit(".", 1)[0]
            names.add(path.with_name(f"{stem}{path.suffix}"))
        else:
            names.add(path)
    return sorted(names)


@step("get_filenames")
def get_filenames(ctx: StepContext) -> dict[str, Any]:
    """List the manifests of ``folder`` and which variant (clear or DRM) each one publishes."""
    root, folder = _folder(ctx)
    manifests = [{"name": path.name, "state": manifest_state(path)} for path in _list_manifests(folder)]
    if not manifests:
        raise PermanentError(f"folder: no manifests (.m3u8, .mpd) in {folder.relative_to(root).as_posix()!r}")
    ctx.log(f"Found {len(manifests)} manifests: {', '.join(item['name'] for item in manifests)}")
    return {"folder": folder.relative_to(root).as_posix(), "manifests": manifests}


@step("prepare_switch")
def prepare_switch(ctx: StepContext) -> dict[str, Any]:
    """Plan the renames that make every switchable manifest of ``folder`` publish the ``drm`` target,
    checking that each needed variant exists."""
    root, folder = _folder(ctx)
    target = _target(ctx)
    other = "drm" if target == "clear" else "clear"
    switch: list[str] = []
    already: list[str] = []
    for published in _list_manifests(folder):
        state = manifest_state(published)
        if state == "ambiguous":
            raise PermanentError(
                f"{published.name}: both {_parked(published, 'clear').name} and "
                f"{_parked(published, 'drm').name} exist; cannot tell which one is published"
            )
        if state == "missing":
            raise PermanentError(f"{published.name}: the published manifest is missing")
        if state == "single":
            continue
        if state == target:
            already.append(published.name)
        else:
            switch.append(published.name)
    if not switch and not already:
        raise PermanentError(f"folder: no manifest has a parked {target} variant to switch to")
    ctx.log(
        f"Switching {len(switch)} manifests to {target} ({other} parked)"
        + (f"; already {target}: {', '.join(already)}" if already else "")
    )
    return {
        "folder": folder.relative_to(root).as_posix(),
        "target": target,
        "switch": switch,
        "already": already,
    }


def _switch_one(published: Path, target: str) -> bool:
    """Make ``published`` serve the ``target`` variant; return False if it already did."""
    current = "drm" if target == "clear" else "clear"
    incoming, parking = _parked(published, target), _parked(published, current)
    if not published.exists():
        raise PermanentError(f"{published.name}: the published manifest is missing")
    if not incoming.exists():
        if parking.exists():
            return False  # done on an earlier attempt
        raise PermanentError(f"{published.name}: the {target} variant is missing")
    if _same(published, incoming):
        if not parking.exists():
            raise PermanentError(f"{published.name}: the {current} variant is missing")
        # A switch the other way stopped after its first step: the published name already serves
        # ``target`` and ``incoming`` is a duplicate of it.
        incoming.unlink()
        return False
    if not parking.exists():
        try:
            os.link(published, parking)
        except OSError:
            # A file system without hard links: a copy keeps the published name in place too.
            shutil.copy2(published, parking)
    elif not _same(published, parking):
        raise PermanentError(f"{published.name}: {parking.name} already exists and differs")
    # Atomic on POSIX: the published name serves the old or the new variant, never nothing.
    os.replace(incoming, published)
    return True


@step("rename_manifests")
def rename_manifests(ctx: StepContext) -> dict[str, Any]:
    """Carry out the switch planned by ``prepare_switch``; return the manifests now serving the target."""
    root, folder = _folder(ctx)
    plan = ctx.results.get("prepare_switch") if isinstance(ctx.results, dict) else None
    target = plan["target"] if isinstance(plan, dict) and "target" in plan else _target(ctx)
    names = (
        list(plan.get("switch", [])) + list(plan.get("already", []))
        if isinstance(plan, dict)
        else [path.name for path in _list_manifests(folder)]
    )
    renamed: list[str] = []
    files: list[str] = []
    for name in names:
        published = resolve_path(root, f"{folder.relative_to(root).as_posix()}/{name}", what="manifest")
        if manifest_state(published) == "single":
            continue
        try:
            if _switch_one(published, target):
                renamed.append(name)
                ctx.log(f"Renamed {_parked(published, target).name} to {name}")
        except PermanentError:
            raise
        except OSError as exc:
            raise TransientError(f"{name}: {exc.strerror or exc}") from exc
        files.append(published.relative_to(root).as_posix())
        ctx.heartbeat()
    ctx.log(f"{len(renamed)} manifests switched to {target}")
    return {"target": target, "renamed": renamed, "files": files}


@step("delete_folder")
def delete_folder(ctx: StepContext) -> dict[str, Any]:
    """Delete the VOD ``folder`` and everything in it (already absent counts as done)."""
    root, folder = _folder(ctx)
    relative = folder.relative_to(root).as_posix()
    if not folder.exists():
        ctx.log(f"Folder {relative!r} is already absent")
        return {"deleted": False, "folder": relative}
    if not folder.is_dir():
        raise PermanentError(f"folder: {relative!r} is not a folder")
    count = sum(1 for path in folder.rglob("*") if path.is_file())
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise TransientError(f"folder: could not delete {relative!r}: {exc.strerror or exc}") from exc
    ctx.log(f"Deleted folder {relative!r} ({count} files)")
    return {"deleted": True, "folder": relative, "file_count": count}


@step("delete_files")
def delete_files(ctx: StepContext) -> dict[str, Any]:
    """Delete each of ``files`` (paths in the client's storage area); files already absent are reported."""
    root = _root(ctx)
    files = ctx.param("files")
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not files:
        raise PermanentError("files: a non-empty list of paths is required")
    # Every path is checked before anything is deleted, so a bad entry deletes nothing.
    paths = [resolve_path(root, item, what="files") for item in files]
    for path in paths:
        if path == root or (path.is_dir() and not path.is_symlink()):
            raise PermanentError(f"files: {path.relative_to(root).as_posix() or '.'!r} is a folder")
    deleted: list[str] = []
    missing: list[str] = []
    for path in paths:
        relative = path.relative_to(root).as_posix()
        try:
            path.unlink()
        except FileNotFoundError:
            missing.append(relative)
            continue
        except OSError as exc:
            raise TransientError(f"files: could not delete {relative!r}: {exc.strerror or exc}") from exc
        deleted.append(relative)
    ctx.log(f"Deleted {len(deleted)} files" + (f"; already absent: {', '.join(missing)}" if missing else ""))
    return {"files": deleted, "deleted": deleted, "missing": missing}
