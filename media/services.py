"""Media services: the content keys a job's steps make, and what operators do to the storage outside
a job."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from clients.models import Client
from media import storage
from media.models import ContentKey
from taskengine_site.errors import DomainError


@dataclass
class StorageMove:
    """What ``storage_move_to_client`` moved (or would move), and what it left where it was."""

    moved: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def storage_move_to_client(*, client: Client, kind: str = "local", dry_run: bool = False) -> StorageMove:
    """Move a shared storage layout into ``client``'s area (for a deployment that predates areas).

    Everything at the top of the storage (the local root, or the S3 prefix) that is not already some
    client's area moves into ``client``'s: ``vod/x`` becomes ``<client>/vod/x``. An entry whose target
    already exists is left in place and reported as a conflict. Local moves are renames (the root is
    one file system); S3 objects are copied, then deleted.
    """
    area = storage.area_name(client.name)
    areas = set(Client.objects.values_list("name", flat=True))
    if kind == "local":
        return _move_local(Path(settings.TASKENGINE_STORAGE_ROOT), area, areas, dry_run)
    if kind == "s3":
        return _move_s3(area, areas, dry_run)
    raise DomainError(f"storage {kind!r} is not supported (one of: local, s3)")


def _move_local(root: Path, area: str, areas: set[str], dry_run: bool) -> StorageMove:
    outcome = StorageMove()
    if not root.is_dir():
        return outcome
    target_area = root / area
    for entry in sorted(root.iterdir()):
        if entry.name in areas:
            continue
        target = target_area / entry.name
        if target.exists() or target.is_symlink():
            outcome.conflicts.append(entry.name)
            continue
        outcome.moved.append((entry.name, f"{area}/{entry.name}"))
        if not dry_run:
            target_area.mkdir(exist_ok=True)
            os.rename(entry, target)
    return outcome


def _move_s3(area: str, areas: set[str], dry_run: bool) -> StorageMove:
    outcome = StorageMove()
    remote = storage.S3MediaStorage(area)
    prefix = storage.s3_prefix()
    bucket = remote.bucket
    for obj in sorted(bucket.objects.filter(Prefix=prefix), key=lambda o: o.key):
        relative = obj.key[len(prefix) :]
        if relative.split("/", 1)[0] in areas or obj.key.endswith("/"):
            continue
        target = f"{prefix}{area}/{relative}"
        if remote.exists(relative):
            outcome.conflicts.append(relative)
            continue
        outcome.moved.append((relative, f"{area}/{relative}"))
        if not dry_run:
            bucket.Object(target).copy_from(CopySource={"Bucket": bucket.name, "Key": obj.key})
            obj.delete()
    return outcome


def content_key_make(
    *,
    job_id: int,
    kind: str,
    key_uri: str = "",
    systems: tuple[str, ...] = (),
    key_id: str | None = None,
    key_hex: str | None = None,
    source: str = "engine",
) -> ContentKey:
    """The content key of job ``job_id``: made by the first call, the same row on every later one.

    A retried step, or two attempts racing, must never encrypt one job's output under two keys: the
    row is unique per job, and the attempt that loses the insert reads the winner's. ``kind`` is
    ``aes`` (a random IV too, named with ``key_uri`` in the playlists), ``cenc`` or ``cbcs`` (common
    encryption for ``systems``, with a random key id unless ``key_id`` is given). ``key_hex`` is a key
    a key server gave (``source`` says which); without it the engine makes a random one.
    A job whose key was made for another kind is refused: its output would not match its key.
    """
    if kind not in ContentKey.Kind.values:
        raise DomainError(f"no content key of kind {kind!r}")
    existing = ContentKey.objects.filter(job_id=job_id).first()
    if existing is None:
        aes = kind == ContentKey.Kind.AES
        try:
            # A savepoint: the caller's transaction (if any) survives losing the race.
            with transaction.atomic():
                return ContentKey.objects.create(
                    job_id=job_id,
                    kind=kind,
                    key=key_hex or secrets.token_bytes(16).hex(),
                    # Without an IV ffmpeg encrypts every segment with IV 0; a random one is unpredictable.
                    iv=secrets.token_bytes(16).hex() if aes else "",
                    key_id="" if aes else (key_id or secrets.token_bytes(16).hex()),
                    key_uri=key_uri if aes else "",
                    systems=",".join(systems),
                    source=source,
                )
        except IntegrityError:
            existing = ContentKey.objects.get(job_id=job_id)
    if existing.kind != kind:
        raise DomainError(f"job {job_id} already has a {existing.kind} key, not {kind}")
    return existing
