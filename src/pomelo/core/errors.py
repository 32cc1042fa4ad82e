"""Domain errors with stable ids.

Every error the platform reports to a client carries an `error_id` that never changes between
releases (clients and integrations branch on it) and an HTTP status the API layer maps it to.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status: int = 400
    error_id: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        error_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if error_id is not None:
            self.error_id = error_id
        self.extra = extra or {}


class InvalidInput(DomainError):
    status = 422
    error_id = "invalid-input"
    title = "Invalid input"


class NotFound(DomainError):
    status = 404
    error_id = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    error_id = "conflict"
    title = "Conflict"


class Unauthenticated(DomainError):
    status = 401
    error_id = "not-authenticated"
    title = "Authentication required"


class Forbidden(DomainError):
    status = 403
    error_id = "forbidden"
    title = "Forbidden"


class ConfigError(Exception):
    """Raised for invalid configuration; the CLI prints it and exits non-zero."""
