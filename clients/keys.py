"""API key format and hashing.

A key is ``te_<prefix>_<secret>``: the 12-character prefix finds the row, the SHA-256 of the whole key is
compared in constant time. Keys carry 256 bits of randomness, so a fast hash is enough (no password
stretching is needed for a secret nobody chose).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "te_"


def generate() -> tuple[str, str]:
    """Return (full key, lookup prefix)."""
    prefix = secrets.token_hex(6)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def prefix_of(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix


def matches(key: str, stored_hash: str) -> bool:
    return hash_matches(hash_key(key), stored_hash)


def hash_matches(key_hash: str, stored_hash: str) -> bool:
    """Whether a key's hash (``hash_key``) is the stored one, compared in constant time."""
    return hmac.compare_digest(key_hash, stored_hash)


def mask(value: str) -> str:
    """Asterisks and the last four characters, as the original's logs show keys."""
    if len(value) <= 4:
        return "*" * len(value)
    return "*" * (len(value) - 4) + value[-4:]
