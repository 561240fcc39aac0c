"""What ``OPTIONS`` answers on every API view (``DEFAULT_METADATA_CLASS``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.metadata import SimpleMetadata

if TYPE_CHECKING:  # rest_framework.views reads this setting, so imports this module, as it loads
    from rest_framework.request import Request
    from rest_framework.views import APIView


class ApiMetadata(SimpleMetadata):
    """DRF's ``SimpleMetadata`` body (name, description, renders, parses), without its ``actions``.

    For a view with ``get_serializer`` (a generic view or viewset) SimpleMetadata also describes the
    POST and PUT bodies, from the view's ``serializer_class`` and, for PUT, after fetching the object
    through ``get_object``. ``JobViewSet`` has neither, on purpose: each action picks its own input
    serializer (``POST /job`` first tries ``plain_submission``), and a job is fetched through
    ``jobs.selectors``, which apply the access rules. SimpleMetadata asserts on such a view, and OPTIONS
    on ``/job``, ``/jobs`` and ``/jobs/<id>/rerun`` would answer 500. The request bodies are described
    once, in the OpenAPI schema (``/openapi.json``); OPTIONS names the view and its media types, as
    SimpleMetadata does for every plain ``APIView``.
    """

    def determine_actions(self, request: Request, view: APIView) -> dict[str, Any]:
        return {}
