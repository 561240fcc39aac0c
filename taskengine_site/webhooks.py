"""Standard Webhooks signatures for callbacks (https://www.standardwebhooks.com/, DESIGN.md §6).

A signed request carries ``webhook-id`` (the same on every retry of one message, so a receiver can drop
duplicates), ``webhook-timestamp`` (seconds since the epoch, of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``). The secret is ``whsec_<base64 key>``.
Signing is delegated to the ``standardwebhooks`` reference library so receivers using any of the
specification's libraries verify what we send.
"""

from __future__ import annotations

import base64
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = [
    "WebhookVerificationError",
    "generate_secret",
    "headers",
    "new_message_id",
    "sign",
    "verify",
]


def generate_secret() -> str:
    """A new secret in the specification's format: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_message_id() -> str:
    """A unique message id (``msg_`` and 32 hex digits)."""
    return "msg_" + secrets.token_hex(16)


def _text(body: bytes | str) -> str:
    return body.decode("utf-8") if isinstance(body, bytes) else body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` header value for one message: ``v1,<base64 signature>``."""
    moment = datetime.fromtimestamp(int(timestamp), tz=UTC)
    return Webhook(secret).sign(msg_id=msg_id, timestamp=moment, data=_text(body))


def headers(secret: str, msg_id: str, body: bytes | str, *, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for sending ``body`` now (or at ``timestamp``)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def verify(secret: str, body: bytes | str, received: dict[str, str]) -> Any:
    """Check a received message as a receiver would; return its parsed JSON body.

    Raises ``WebhookVerificationError`` for a missing header, a bad signature or a timestamp more than
    five minutes away from now.
    """
    return Webhook(secret).verify(_text(body), received)
