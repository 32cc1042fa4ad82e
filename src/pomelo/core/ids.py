"""Identifiers.

Ids are random UUIDs rendered as 32 hex characters: they are opaque, unguessable across tenants
(an id leaks nothing about other tenants' data) and portable between SQLite and PostgreSQL.
"""

import secrets
import uuid


def new_id() -> str:
    return uuid.uuid4().hex


def new_token(nbytes: int = 32) -> str:
    """A URL-safe secret for sessions and API keys."""
    return secrets.token_urlsafe(nbytes)
