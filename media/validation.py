"""The media app's submission hooks (registered with the workflow registry by ``media.apps``).

They refuse, with a ``DomainError`` naming the parameter (answered 400), what a step could never run or
must never be given: paths that leave the client's area or hold control characters, another client's
area named by a client that is not an operator. What can only be known when a step runs (a symbolic link,
a missing file) is checked again there.
"""

from __future__ import annotations

from typing import Any

from clients.models import Client
from jobs.workflows.registry import SubmissionCheck
from media import params
from taskengine_site.errors import DomainError


def check_storage_client(parameters: dict[str, Any], client: Client) -> None:
    """``storage_client`` (act on another client's area) is for operators, and names a real client."""
    chosen = parameters.get("storage_client")
    if chosen is None or chosen == client.name:
        return
    params.check_text("storage_client", chosen)
    if not client.is_operator:
        raise DomainError("parameters.storage_client: only an operator client may act for another client")
    if not isinstance(chosen, str) or not Client.objects.filter(name=chosen).exists():
        raise DomainError(f"parameters.storage_client: no client named {chosen!r}")


def validate_media_job(workflow: str, parameters: dict[str, Any], client: Client) -> SubmissionCheck:
    """The VOD workflows: their documented parameters, and when a live capture can run."""
    params.validate_parameters(workflow, parameters)
    check_storage_client(parameters, client)
    return SubmissionCheck(not_before=params.latest_future_clip_end(parameters))


def validate_storage_job(workflow: str, parameters: dict[str, Any], client: Client) -> SubmissionCheck:
    """drmswitch, voddelete, asset_delete: ``folder`` and ``files`` are paths inside the area."""
    if "folder" in parameters:
        params.check_relative_path("folder", parameters["folder"])
    files = parameters.get("files")
    for index, item in enumerate(files if isinstance(files, list) else [files] if files is not None else []):
        params.check_relative_path(f"files[{index}]", item)
    check_storage_client(parameters, client)
    return SubmissionCheck()
