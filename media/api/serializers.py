"""Output shapes of the media endpoints: a job's content keys (GET /jobs/<id>/keys).

The key documents themselves are made by ``ContentKey.document`` (the signed job callback carries the
same); these serializers render and document them.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers


def _hex16(help_text: str) -> serializers.CharField:
    """16 bytes as 32 hex digits."""
    return serializers.CharField(min_length=32, max_length=32, help_text=help_text)


class AesKeySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["aes"])
    key_hex = _hex16("The 16-byte AES-128 key, hex.")
    iv_hex = _hex16("The IV the playlists name (0x + this), hex.")
    key_uri = serializers.CharField(
        help_text="What the playlists name as the key's URI: serve the key there to authorised players."
    )


class ClearKeyEntrySerializer(serializers.Serializer):
    kty = serializers.ChoiceField(choices=["oct"])
    kid = serializers.CharField(help_text="The key id, base64url without padding.")
    k = serializers.CharField(help_text="The key, base64url without padding.")


class ClearKeyLicenseSerializer(serializers.Serializer):
    keys = ClearKeyEntrySerializer(many=True)
    type = serializers.ChoiceField(choices=["temporary"])


class CencKeySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["cenc", "cbcs"], help_text="The common-encryption scheme.")
    scheme = serializers.ChoiceField(choices=["cenc", "cbcs"], help_text="The same as kind.")
    systems = serializers.ListField(
        child=serializers.ChoiceField(choices=["clearkey", "widevine", "playready", "fairplay"]),
        help_text="The key systems the output is signalled for (pssh boxes, MPD, HLS key tags).",
    )
    origin = serializers.ChoiceField(
        choices=["engine", "cpix"], help_text="Made by the engine, or given by the job's CPIX key server."
    )
    kid_hex = _hex16("The key id (in the init segments' tenc box), hex.")
    key_hex = _hex16("The 16-byte content key, hex.")
    clearkey = ClearKeyLicenseSerializer(help_text="The W3C Clear Key license for this key.")


KEY_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "aes": AesKeySerializer,
    "cenc": CencKeySerializer,
    "cbcs": CencKeySerializer,
}


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="ContentKey",
        serializers={"aes": AesKeySerializer, "cenc": CencKeySerializer, "cbcs": CencKeySerializer},
        resource_type_field_name="kind",
        many=True,
    )
)
class ContentKeyListField(serializers.Field):
    """Each key document rendered by the serializer of its ``kind``."""

    def to_representation(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(KEY_SERIALIZERS[document["kind"]](document).data) for document in value]


class JobKeysSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    keys = ContentKeyListField(
        help_text="The job's content keys: none for clear output or before its key is made."
    )
