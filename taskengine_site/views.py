"""Site-wide endpoints: GET / (alive), and the JSON answers for errors outside DRF views."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from taskengine_site.errors import path_not_found


class AliveView(APIView):
    """GET / — reachable check; needs no key."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="alive",
        auth=[],
        responses=inline_serializer("Alive", fields={"result": serializers.CharField()}),
        tags=["status"],
    )
    def get(self, request: Request) -> Response:
        return Response({"result": "alive"})


class DocsView(SpectacularSwaggerView):
    """GET /docs: the Swagger UI page of the schema."""

    def get_renderers(self) -> list[BaseRenderer]:
        # The page's template is the view's only renderer, and it cannot render what OPTIONS answers
        # (DRF's description of the view: the template fails on its missing variables, a 500). OPTIONS
        # is answered in JSON, as on every other route. (The docstring above is that answer's text.)
        if self.request.method == "OPTIONS":
            return [JSONRenderer()]
        return list(super().get_renderers())


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return JsonResponse(path_not_found(request.path), status=404)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    # Django's own refusals (too many fields, a disallowed host…) carry a message safe to show.
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse({"error": f"Request body too large: {exception}"}, status=413)
    message = (
        str(exception) if isinstance(exception, SuspiciousOperation) and str(exception) else "Bad request."
    )
    return JsonResponse({"error": message}, status=400)


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return JsonResponse({"error": "Forbidden."}, status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"error": "Internal server error."}, status=500)
