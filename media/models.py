"""What the media steps keep in the database: the content keys of encrypted output (DESIGN.md §7)."""

from __future__ import annotations

import base64
from typing import Any

from django.db import models

from clients import crypto
from clients.fields import EncryptedTextField
from jobs.models import Job


class ContentKey(models.Model):
    """The key one job's encrypted output was made with: a secret, never written next to the content.

    One per job (the unique constraint), so a retried ``prepare_encryption`` finds the key the first
    attempt made instead of encrypting part of the output under another. The key is stored encrypted
    (``EncryptedTextField``, like webhook secrets); the IV, key id and key URI are published in the
    playlists and manifests anyway and stay plain.
    """

    class Kind(models.TextChoices):
        AES = "aes", "HLS AES-128"
        CENC = "cenc", "Common encryption, cenc (AES-CTR)"
        CBCS = "cbcs", "Common encryption, cbcs (AES-CBC pattern)"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="content_keys", db_index=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # Hex of the 16-byte key, encrypted at rest.
    key = EncryptedTextField()
    # Hex of the 16-byte IV (AES-128); empty for CENC.
    iv = models.CharField(max_length=32, blank=True, default="")
    # Hex of the 16-byte key id (CENC); empty for AES-128.
    key_id = models.CharField(max_length=32, blank=True, default="")
    # What the AES-128 playlists name as the key's URI (the client's own key server).
    key_uri = models.TextField(blank=True, default="")
    # The key systems the output is signalled for (comma-separated: clearkey, widevine, playready,
    # fairplay); empty for AES-128.
    systems = models.CharField(max_length=64, blank=True, default="")
    # Where the key came from: made by the engine, or given by the client's CPIX key server.
    source = models.CharField(max_length=16, blank=True, default="engine")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job"], name="media_contentkey_one_per_job")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} key of job {self.job_id}"

    def key_hex(self) -> str:
        """The plaintext key as hex; raises ``SecretUnreadable`` when no configured key decrypts it."""
        if self.key == crypto.UNREADABLE:
            raise crypto.SecretUnreadable(f"the content key of job {self.job_id} cannot be decrypted")
        return str(self.key)

    def document(self) -> dict[str, Any]:
        """What the owning client is given (GET /jobs/<id>/keys and the signed job callback)."""
        key = self.key_hex()
        if self.kind == self.Kind.AES:
            return {"kind": "aes", "key_hex": key, "iv_hex": self.iv, "key_uri": self.key_uri}
        return {
            "kind": self.kind,
            "scheme": self.kind,
            "systems": [system for system in self.systems.split(",") if system],
            "origin": self.source,
            "kid_hex": self.key_id,
            "key_hex": key,
            # The W3C Clear Key license format, ready for a player's clearkey configuration.
            "clearkey": {
                "keys": [{"kty": "oct", "kid": _b64url(self.key_id), "k": _b64url(key)}],
                "type": "temporary",
            },
        }


def _b64url(hex_text: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_text)).rstrip(b"=").decode()
