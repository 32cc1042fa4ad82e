"""Reliable provisional responses toward a caller that requires them (RFC 3262, 100rel).

Some carriers and PBXs send ``Require: 100rel``: every 18x the PBX sends them must carry an
``RSeq``, be retransmitted (T1, doubling) until the caller acknowledges it with a PRACK whose
``RAck`` names it, and the next reliable provisional must wait for that PRACK. Only the newest
waiting provisional is kept: an older "ringing" is worthless once a newer one exists.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Final

from pomelo.sip.message import SipRequest, SipResponse

if TYPE_CHECKING:
    from pomelo.pbx.calls import Call
    from pomelo.sip.transaction import ServerTransaction, TimerHandle

__all__ = ["ReliableProvisionals", "requires_100rel"]

log = logging.getLogger(__name__)

T1: Final = 0.5
GIVE_UP: Final = 64 * T1


def requires_100rel(request: SipRequest) -> bool:
    return any(
        tag.strip().lower() == "100rel"
        for value in request.header_values("Require")
        for tag in value.split(",")
    )


class ReliableProvisionals:
    __slots__ = ("call", "elapsed", "interval", "pending", "queued", "rseq", "timer")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.rseq = random.randint(1, 2**31 - 1)
        self.pending: SipResponse | None = None
        self.queued: tuple[int, str | None, bytes, list[tuple[str, str]]] | None = None
        self.timer: TimerHandle | None = None
        self.interval = T1
        self.elapsed = 0.0

    def send(
        self, status: int, reason: str | None, body: bytes, headers: list[tuple[str, str]]
    ) -> SipResponse | None:
        """Send (or queue behind the unacknowledged one) a reliable provisional."""
        if self.pending is not None:
            self.queued = (status, reason, body, headers)
            return None
        a = self.call.a
        if a.tx is None or not a.ringing:
            return None
        self.rseq += 1
        response = a.tx.reply(
            status,
            reason,
            body=body,
            headers=[*headers, ("Require", "100rel"), ("RSeq", str(self.rseq))],
            contact=a.local_contact,
        )
        if response is not None:
            self.pending = response
            self.interval, self.elapsed = T1, 0.0
            self._arm()
        return response

    def _arm(self) -> None:
        call = self.call
        self.timer = call.service.call_later(self.interval, lambda: call.post(self._retransmit))

    def _retransmit(self) -> None:
        self.timer = None
        a = self.call.a
        pending = self.pending
        if pending is None or a.tx is None or not a.ringing:
            return
        self.elapsed += self.interval
        if self.elapsed >= GIVE_UP:
            log.info("call %s: reliable %d never PRACKed", self.call.id, pending.status)
            self.pending = None  # stop trying; the final response will settle the caller
            return
        a.tx.respond(pending)
        self.interval = min(self.interval * 2, 4.0)
        self._arm()

    def on_prack(self, tx: ServerTransaction) -> bool:
        """Answer a PRACK; True when it acknowledged the pending provisional."""
        pending = self.pending
        rack = (tx.request.header("RAck") or "").split()
        if pending is None or len(rack) != 3 or not rack[0].isdigit():
            tx.reply(481 if pending is None else 400, "No Matching Provisional")
            return False
        if int(rack[0]) != self.rseq or rack[2].upper() != "INVITE":
            tx.reply(481, "No Matching Provisional")
            return False
        tx.reply(200)
        self.pending = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        queued, self.queued = self.queued, None
        if queued is not None:
            self.send(*queued)
        return True

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pending = self.queued = None
