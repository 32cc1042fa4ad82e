"""Exceptions raised by the SIP protocol library.

Every failure caused by bytes from the network surfaces as one of these, so a transport can
catch a single family of exceptions and decide between answering 400 and dropping the
connection without ever seeing a stray ``ValueError`` or ``IndexError``.
"""

from __future__ import annotations

__all__ = ["SdpParseError", "SipError", "SipFramingError", "SipParseError"]


class SipError(Exception):
    """Root of the library's exceptions so callers can catch them all at once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SipParseError(SipError):
    """A message, URI or header value is not valid SIP.

    ``reason`` is meant for logs and for the reason phrase of a 400 response, so it names
    the offending element rather than echoing large amounts of peer-controlled data.
    """


class SipFramingError(SipError):
    """A byte stream can no longer be split into messages; the connection must be closed.

    Distinct from :class:`SipParseError` because a framed-but-invalid message only warrants a
    400, while lost framing leaves no way to find where the next message starts.
    """


class SdpParseError(SipError):
    """A session description is malformed or cannot be answered."""
