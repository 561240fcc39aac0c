"""Where media steps read sources and write outputs, and the local work directory between them.

Storage is per client (DESIGN §7): every path a job names is relative to its client's own **area**,
and nothing it names can leave that area.

- ``local``: the area is ``<TASKENGINE_STORAGE_ROOT>/<client>/``. A path that would leave it (absolute,
  ``..``, a symbolic link pointing out, into another client's area or anywhere else) is refused.
- ``S3``: the area is every key under ``<TASKENGINE_S3_PREFIX><client>/`` in the bucket, through
  django-storages' ``S3Storage`` (boto3), configured by the ``TASKENGINE_S3_*`` settings: the bucket
  (required), the prefix, an endpoint URL (for non-AWS services), keys and a region. Without keys,
  boto3's usual credential chain applies.

An operator client acts on another client's area only by naming it: the ``storage_client`` parameter,
which only an operator's job may set (refused at submission otherwise, and checked again when a step
runs). Without it an operator's job uses the operator's own area like any other client's.

ffmpeg works on local files, so sources are staged into a per-job work directory below
``TASKENGINE_WORK_DIR`` and outputs are uploaded from there. A
staged copy is reused when its size still matches, so a retried step does not download again.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

from clients.models import Client
from clients.services import CLIENT_NAME
from jobs.workflows.registry import PermanentError, StepContext, TransientError

STORAGE_KINDS = ("local", "s3")

mimetypes.add_type("application/vnd.apple.mpegurl", ".m3u8")
mimetypes.add_type("video/mp2t", ".ts")
mimetypes.add_type("video/iso.segment", ".m4s")
mimetypes.add_type("text/vtt", ".vtt")


def normalise_key(path: str) -> str:
    """A storage path as ``a/b/c``: no leading slash, no empty, ``.`` or ``..`` parts."""
    if not isinstance(path, str) or "\x00" in path or "\\" in path:
        raise PermanentError(f"invalid storage path {path!r}")
    parts = [part for part in PurePosixPath(path).parts if part not in ("/", ".", "")]
    if ".." in parts:
        raise PermanentError(f"storage path {path!r} may not contain '..'")
    return "/".join(parts)


def join_key(folder: str, name: str) -> str:
    return normalise_key(f"{folder}/{name}" if folder else name)


def area_name(client_name: str) -> str:
    """``client_name`` as its storage area's folder (or key prefix) name; refuses a name that could not
    be one path component (such clients cannot be created any more; an older one must be renamed)."""
    if not isinstance(client_name, str) or not CLIENT_NAME.fullmatch(client_name):
        raise PermanentError(
            f"client name {client_name!r} cannot name a storage area (letters, digits, '.', '_', '-')"
        )
    return client_name


def storage_client(ctx: StepContext) -> str:
    """Whose area this step works in: the job's client, or the client an operator's job names in
    ``storage_client`` (refused for any other job)."""
    chosen = ctx.param("storage_client")
    if chosen is None or chosen == ctx.client_name:
        return ctx.client_name
    if not Client.objects.filter(name=ctx.client_name, is_operator=True).exists():
        raise PermanentError("parameters.storage_client: only an operator's job may name another client")
    if not isinstance(chosen, str) or not Client.objects.filter(name=chosen).exists():
        raise PermanentError(f"parameters.storage_client: no client named {chosen!r}")
    return chosen


def client_root(ctx: StepContext) -> Path:
    """The local area of this step's client (created): ``<storage root>/<client>``."""
    root = Path(ctx.storage_root).resolve() / area_name(storage_client(ctx))
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


class Storage(ABC):
    """The few operations the media steps need, over local files or an object store."""

    kind: str

    @abstractmethod
    def list_files(self, folder: str) -> list[str]:
        """Every file under ``folder`` (recursively), as paths relative to ``folder``, sorted."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The size of file ``key`` in bytes, or None when it does not exist."""

    @abstractmethod
    def download(self, key: str, target: Path) -> None:
        """Copy file ``key`` to the local path ``target``."""

    @abstractmethod
    def upload(self, source: Path, key: str) -> None:
        """Store the local file ``source`` as ``key``, replacing it."""

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def write_bytes(self, key: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            # Named like the key: an object store takes the content type from the name.
            path = Path(scratch) / (PurePosixPath(normalise_key(key)).name or "data")
            path.write_bytes(data)
            self.upload(path, key)

    def read_bytes(self, key: str) -> bytes:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "data"
            self.download(key, path)
            return path.read_bytes()


class LocalStorage(Storage):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """The local path of ``key``; refuses one that resolves outside the area (through a symlink)."""
        path = (self.root / normalise_key(key)).resolve()
        if path != self.root and not path.is_relative_to(self.root):
            raise PermanentError(f"storage path {key!r} leads out of the client's storage area")
        return path

    def list_files(self, folder: str) -> list[str]:
        base = self.path(folder)
        if not base.is_dir():
            return []
        names = []
        for path in base.rglob("*"):
            if path.is_file():
                self.path(str(path.relative_to(self.root)))  # a symlink out of the root is refused
                names.append(path.relative_to(base).as_posix())
        return sorted(names)

    def size(self, key: str) -> int | None:
        path = self.path(key)
        return path.stat().st_size if path.is_file() else None

    def download(self, key: str, target: Path) -> None:
        source = self.path(key)
        if not source.is_file():
            raise PermanentError(f"{key} does not exist in local storage")
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(source, target)

    def upload(self, source: Path, key: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside and rename, so a reader never sees half a playlist.
        partial = target.with_name(f".{target.name}.partial")
        _link_or_copy(source, partial)
        os.replace(partial, target)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link when both are on one file system (no bytes copied: a large source is staged at
    once), else a copy. Neither side is ever modified in place, so sharing the data is safe."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def s3_settings() -> dict[str, Any]:
    """django-storages ``S3Storage`` options from the ``TASKENGINE_S3_*`` settings."""
    bucket = settings.TASKENGINE_S3_BUCKET
    if not bucket:
        raise PermanentError("S3 storage is not configured: TASKENGINE_S3_BUCKET is not set")
    options: dict[str, Any] = {
        "bucket_name": bucket,
        "file_overwrite": True,
        "querystring_auth": False,
    }
    optional = {
        "endpoint_url": settings.TASKENGINE_S3_ENDPOINT_URL,
        "access_key": settings.TASKENGINE_S3_ACCESS_KEY_ID,
        "secret_key": settings.TASKENGINE_S3_SECRET_ACCESS_KEY,
        "region_name": settings.TASKENGINE_S3_REGION,
    }
    options.update((option, value) for option, value in optional.items() if value)
    return options


def s3_prefix() -> str:
    """``TASKENGINE_S3_PREFIX``: the key prefix under which every client's area lies (may be empty)."""
    prefix = normalise_key(settings.TASKENGINE_S3_PREFIX)
    return prefix + "/" if prefix else ""


class S3MediaStorage(Storage):
    """Keys under ``<prefix><client>/`` of the bucket; every key a step names is relative to that."""

    kind = "s3"

    def __init__(self, area: str) -> None:
        from storages.backends.s3 import S3Storage

        self.backend = S3Storage(**s3_settings())
        self.prefix = f"{s3_prefix()}{area_name(area)}/"

    def _key(self, key: str) -> str:
        return self.prefix + normalise_key(key)

    @property
    def bucket(self) -> Any:
        return self.backend.bucket

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "403", "AccessDenied"):
                raise PermanentError(f"S3 {what}: {code}") from exc
            raise TransientError(f"S3 {what}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"S3 {what}: {exc}") from exc

    def list_files(self, folder: str) -> list[str]:
        prefix = normalise_key(folder)
        prefix = self.prefix + (f"{prefix}/" if prefix else "")
        objects = self._call("list", lambda: list(self.bucket.objects.filter(Prefix=prefix)))
        return sorted(obj.key[len(prefix) :] for obj in objects if not obj.key.endswith("/"))

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.bucket.Object(self._key(key)).content_length)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise TransientError(f"S3 head {key}: {exc}") from exc

    def download(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self._call(f"download {key}", self.bucket.download_file, self._key(key), str(target))

    def upload(self, source: Path, key: str) -> None:
        content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        self._call(
            f"upload {key}",
            self.bucket.upload_file,
            str(source),
            self._key(key),
            ExtraArgs={"ContentType": content_type},
        )


def get_storage(kind: Any, ctx: StepContext) -> Storage:
    """The storage named ``kind`` (``local`` or ``S3``, any case): this step's client's area in it."""
    name = str(kind or "local").lower()
    if name == "local":
        return LocalStorage(client_root(ctx))
    if name == "s3":
        return S3MediaStorage(storage_client(ctx))
    raise PermanentError(f"storage {kind!r} is not supported (one of: local, S3)")


def source_storage(ctx: StepContext) -> Storage:
    return get_storage(ctx.param("source_storage", "local"), ctx)


def destination_storage(ctx: StepContext) -> Storage:
    return get_storage(ctx.param("destination_storage", "local"), ctx)


def job_work_dir(job_id: int) -> Path:
    """Where job ``job_id``'s media steps stage files on this machine (not created)."""
    return Path(settings.TASKENGINE_WORK_DIR) / "taskengine-media" / f"job-{int(job_id)}"


def remove_job_work_dir(job_id: int) -> None:
    """Remove a job's staged files on this machine; for the engine's clean-up of failed or broken jobs
    (a job that completes removes its own in ``publish_outputs``)."""
    shutil.rmtree(job_work_dir(job_id), ignore_errors=True)


def work_dir(ctx: StepContext, *parts: str) -> Path:
    """This job's local work directory (created), or a folder inside it."""
    path = job_work_dir(ctx.job_id)
    for part in parts:
        path = path / normalise_key(part)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_work_dir(ctx: StepContext) -> None:
    remove_job_work_dir(ctx.job_id)


def stage(storage: Storage, key: str, target: Path) -> Path:
    """Download ``key`` to ``target`` unless a copy of the same size is already there."""
    expected = storage.size(key)
    if expected is None:
        raise PermanentError(f"{key} does not exist in {storage.kind} storage")
    if target.is_file() and target.stat().st_size == expected:
        return target
    partial = target.with_name(f"{target.name}.partial")
    storage.download(key, partial)
    os.replace(partial, target)
    return target


def publish_folder(storage: Storage, local: Path, folder: str) -> list[str]:
    """Upload every file under ``local`` into ``folder``; the storage paths written, in upload order.

    Playlists go last, so a player that finds a playlist finds every segment it names.
    """
    files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: (p.suffix == ".m3u8", str(p)))
    written = []
    for path in files:
        key = join_key(folder, path.relative_to(local).as_posix())
        storage.upload(path, key)
        written.append(key)
    return written
