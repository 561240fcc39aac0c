"""Encryption at rest of client secrets that the engine must be able to read back (webhook secrets).

API keys are only ever hashed (clients.keys); a webhook secret, though, signs every callback, so the
engine needs its plaintext. It is stored as a Fernet token (AES-128-CBC + HMAC-SHA256) under a key
derived with HKDF from ``TASKENGINE_SECRETS_KEY`` when set, else from ``SECRET_KEY``. Decryption also
tries ``SECRET_KEY`` and every ``SECRET_KEY_FALLBACKS`` entry, so rotating ``SECRET_KEY`` the Django way
(old key moved to the fallbacks) keeps existing secrets readable; saving a client re-encrypts under the
current key.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

# Binds derived keys to this one use, so the same SECRET_KEY never yields this key anywhere else.
HKDF_INFO = b"taskengine:clients:webhook-secret:v1"
# What a stored secret reads as when no configured key can decrypt it (SECRET_KEY rotated without
# keeping the old one in SECRET_KEY_FALLBACKS): never a valid whsec_ secret, so nothing is signed
# with garbage and the callback delivery fails naming the cause.
UNREADABLE = "!unreadable"


class SecretUnreadable(Exception):
    """No configured key decrypts the stored token."""


def _key_materials() -> tuple[str, ...]:
    dedicated = settings.TASKENGINE_SECRETS_KEY
    materials = [dedicated] if dedicated else []
    materials.append(str(settings.SECRET_KEY))
    materials.extend(str(key) for key in settings.SECRET_KEY_FALLBACKS)
    return tuple(dict.fromkeys(m for m in materials if m))


@functools.lru_cache(maxsize=8)
def _fernet(materials: tuple[str, ...]) -> MultiFernet:
    fernets = []
    for material in materials:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
            material.encode()
        )
        fernets.append(Fernet(base64.urlsafe_b64encode(derived)))
    return MultiFernet(fernets)


def encrypt(plaintext: str) -> str:
    """A Fernet token of ``plaintext`` under the current key (the first of the key materials)."""
    return _fernet(_key_materials()).encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    """The plaintext of ``token``; raises :class:`SecretUnreadable` when no configured key fits."""
    try:
        return _fernet(_key_materials()).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError, ValueError):
        raise SecretUnreadable("no configured key decrypts this secret") from None


def is_token(value: str) -> bool:
    """Fernet tokens are URL-safe base64 of a version byte 0x80: they always start with ``gAAAAA``."""
    return value.startswith("gAAAAA")
