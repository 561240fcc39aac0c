from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class AliveView(APIView):
    """GET / — reachable check; needs no key."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="alive",
        auth=[],
        responses=inline_serializer("Alive", fields={"result": serializers.CharField()}),
    )
    def get(self, request: Request) -> Response:
        return Response({"result": "alive"})
