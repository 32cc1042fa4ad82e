"""Encryption of secrets the platform must be able to read back (a trunk's provider password).

Passwords of people are hashed, never encrypted; this is only for credentials Pomelo itself has to
present to someone else. The key is derived from `secret_key`, so rotating that key means
re-entering such secrets.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string

from cryptography.fernet import Fernet, InvalidToken

_ALPHABET = string.ascii_letters + string.digits


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"pomelo-secret-box:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("cannot decrypt: secret_key changed since this was stored") from exc


def strong_password(length: int = 20) -> str:
    """Letters and digits only: typed into desk phones, so no symbols that keypads lack."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
