"""Where an extension can be reached: the contacts its phones registered.

The registrar fills it; the call code reads it. Lookups are synchronous and in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pomelo.sip.transport import Connection


@dataclass(frozen=True, slots=True)
class Contact:
    #: The Contact URI the phone registered (where it asked to be called).
    uri: str
    #: Transport the REGISTER arrived on ("UDP", "TCP", "TLS", "WS", "WSS").
    transport: str
    #: The address the REGISTER really came from: behind NAT, send requests there.
    source: tuple[str, int]
    #: The live stream connection it registered over (TCP/TLS/WS), reused to reach it.
    connection: Connection | None
    expires_at: float


class Location(Protocol):
    def contacts(self, account_id: str) -> list[Contact]:
        """Live contacts of a SIP account, most recently registered first."""
