"""GET /jobs/<id>/keys: the content keys of a job's encrypted output, for the client that owns it.

Access is ``jobs.selectors``'s (DESIGN.md §7): another client's job answers 404 exactly like a missing
one; operators see every job's, as for GET /jobs/<id>. The answer is never cached.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from clients.crypto import SecretUnreadable
from jobs import selectors
from media import selectors as media_selectors
from media.api.serializers import JobKeysSerializer
from taskengine_site.api import ApiView, requester
from taskengine_site.errors import DomainError


class KeysUnreadable(DomainError):
    """The keys exist but the configured SECRET_KEY (and its fallbacks) cannot decrypt them."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR


class JobKeysView(ApiView):
    @extend_schema(
        operation_id="job_keys",
        summary="The content keys of a job's encrypted output (drm aes or cenc)",
        description="Secrets: answered with Cache-Control: no-store, only to the job's client (and "
        "operators). The signed job callback carries the same list as `keys`.",
        responses={200: JobKeysSerializer},
        tags=["jobs"],
    )
    def get(self, request: Request, pk: int) -> Response:
        job = selectors.job_get(requester=requester(request), job_id=int(pk))
        try:
            documents = media_selectors.job_key_documents(job_id=job.pk)
        except SecretUnreadable:
            raise KeysUnreadable(
                "the job's keys cannot be decrypted with the configured keys", job_id=job.pk
            ) from None
        response = Response(JobKeysSerializer({"id": job.pk, "keys": documents}).data)
        response["Cache-Control"] = "no-store"
        return response
