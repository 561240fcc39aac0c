"""Read-only queries of the media app: a job's content keys (DESIGN.md §7).

Access to the job is decided by ``jobs.selectors`` before these are called; they only read.
"""

from __future__ import annotations

from typing import Any

from media.models import ContentKey


def job_content_keys(*, job_id: int) -> list[ContentKey]:
    """The content keys of job ``job_id`` (none for clear output, or before ``prepare_encryption``)."""
    return list(ContentKey.objects.filter(job_id=job_id).order_by("id"))


def content_key_get(*, job_id: int) -> ContentKey | None:
    """The one content key of job ``job_id``, or None."""
    return ContentKey.objects.filter(job_id=job_id).first()


def job_key_documents(*, job_id: int) -> list[dict[str, Any]]:
    """The keys as the owning client is given them; raises ``SecretUnreadable`` when a stored key
    cannot be decrypted with the configured keys."""
    return [key.document() for key in job_content_keys(job_id=job_id)]


def job_callback_keys(job_id: int) -> dict[str, Any]:
    """The fields a signed job callback adds for job ``job_id``: ``keys``, when it has any."""
    documents = job_key_documents(job_id=job_id)
    return {"keys": documents} if documents else {}
