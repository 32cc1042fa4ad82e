"""Dialogs (RFC 3261 §12): the state two user agents share for the life of a call.

A dialog is identified by Call-ID plus both tags and remembers what every later request in
it needs: the route set learned from Record-Route, the remote target learned from Contact,
and both CSeq counters. Building in-dialog requests here, rather than in each caller, is
what keeps loose/strict routing, ACK numbering and CSeq ordering right everywhere.

Nothing in this module sends anything; hand the requests it builds to the endpoint.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable

from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.uri import NameAddr, SipUri, Uri

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogError",
    "DialogState",
    "dialog_id_of_request",
    "dialog_id_of_response",
]

TARGET_REFRESH_METHODS = frozenset(("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"))
"""Requests whose Contact replaces the remote target (§12.2, RFC 3311, RFC 6665, RFC 3515)."""

DialogId = tuple[str, str, str]


class DialogError(ValueError):
    """A message cannot create or belong to a dialog (e.g. a response without a To tag)."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def dialog_id_of_request(request: SipRequest) -> DialogId:
    """The id of the dialog an incoming request belongs to, from our (UAS) point of view:
    Call-ID, local tag (To) and remote tag (From)."""
    return (request.call_id, request.to.tag or "", request.from_.tag or "")


def dialog_id_of_response(response: SipResponse) -> DialogId:
    """The id of the dialog a response belongs to, from the UAC's point of view."""
    return (response.call_id, response.from_.tag or "", response.to.tag or "")


def _first_contact(message: SipRequest | SipResponse) -> Uri | None:
    return message.contacts[0].uri.copy() if message.contacts else None


class Dialog:
    """One side of a dialog. Create it with :meth:`from_uac` or :meth:`from_uas`."""

    __slots__ = (
        "call_id",
        "local",
        "local_contact",
        "local_cseq",
        "remote",
        "remote_cseq",
        "remote_target",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local: NameAddr,
        remote: NameAddr,
        remote_target: Uri,
        route_set: Iterable[NameAddr] = (),
        local_cseq: int,
        remote_cseq: int | None,
        local_contact: NameAddr | None = None,
        secure: bool = False,
        state: DialogState = DialogState.CONFIRMED,
    ) -> None:
        if not local.tag or not remote.tag:
            raise DialogError("both sides of a dialog need a tag")
        self.call_id = call_id
        self.local = local
        self.remote = remote
        self.remote_target = remote_target
        self.route_set = list(route_set)
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.local_contact = local_contact
        self.secure = secure
        self.state = state

    # -- creation -----------------------------------------------------------------------

    @classmethod
    def from_uac(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """The caller's dialog from a 2xx or a tagged 101–199 to its request (§12.1.2).

        The route set is the response's Record-Route *reversed*, because the list was built
        by proxies on the way to the callee and we send the other way round.
        """
        if not 101 <= response.status < 300:
            raise DialogError(f"a {response.status} response does not create a dialog")
        if not response.to.tag:
            raise DialogError("the response has no To tag")
        target = _first_contact(response) or request.uri.copy()
        return cls(
            call_id=request.call_id,
            local=request.from_.copy(),
            remote=response.to.copy(),
            remote_target=target,
            route_set=[route.copy() for route in reversed(response.record_routes)],
            local_cseq=request.cseq,
            remote_cseq=None,
            local_contact=request.contacts[0].copy() if request.contacts else None,
            secure=_is_secure(request),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    @classmethod
    def from_uas(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """The callee's dialog from a request and the 2xx/1xx we answer it with (§12.1.1).

        The route set is the request's Record-Route in order; our local CSeq starts at a
        random value well below 2³¹ so later increments cannot overflow.
        """
        if not 101 <= response.status < 300:
            raise DialogError(f"a {response.status} response does not create a dialog")
        if not request.from_.tag:
            raise DialogError("the request has no From tag")
        target = _first_contact(request)
        if target is None:
            raise DialogError("a dialog-creating request needs a Contact")
        return cls(
            call_id=request.call_id,
            local=response.to.copy(),
            remote=request.from_.copy(),
            remote_target=target,
            route_set=[route.copy() for route in request.record_routes],
            local_cseq=secrets.randbelow(2**16) + 1,
            remote_cseq=request.cseq,
            local_contact=response.contacts[0].copy() if response.contacts else None,
            secure=_is_secure(request),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    # -- identity -----------------------------------------------------------------------

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote.tag or ""

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- outgoing requests --------------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        contact: NameAddr | None = None,
    ) -> SipRequest:
        """A new in-dialog request (BYE, re-INVITE, UPDATE, INFO, REFER, ...) with the next
        local CSeq, the dialog's From/To/Call-ID and routing per §12.2.1.1."""
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} reuses its INVITE's CSeq; use create_ack/build_cancel")
        if self.state is DialogState.TERMINATED:
            raise DialogError("the dialog is terminated")
        self.local_cseq += 1
        return self._build(method, self.local_cseq, body, headers, contact)

    def create_ack(
        self, invite_cseq: int, *, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> SipRequest:
        """The ACK for a 2xx to the INVITE numbered ``invite_cseq`` (§13.2.2.4): same CSeq
        number, method ACK; it goes end to end with the dialog's route set."""
        return self._build("ACK", invite_cseq, body, headers, None)

    def _build(
        self,
        method: str,
        cseq: int,
        body: bytes,
        headers: Iterable[tuple[str, str]],
        contact: NameAddr | None,
    ) -> SipRequest:
        uri, routes = self._routing()
        contact = contact or self.local_contact
        needs_contact = method in TARGET_REFRESH_METHODS
        return SipRequest(
            method,
            uri,
            from_=self.local.copy(),
            to=self.remote.copy(),
            call_id=self.call_id,
            cseq=cseq,
            routes=routes,
            contacts=[contact.copy()] if contact is not None and needs_contact else None,
            body=body,
            headers=headers,
        )

    def _routing(self) -> tuple[Uri, list[NameAddr]]:
        """Request-URI and Route list (§12.2.1.1): loose routing keeps the remote target as
        Request-URI; a strict first hop takes its place and the target goes last."""
        route_set = self.route_set
        if not route_set:
            return self.remote_target.copy(), []
        first = route_set[0].uri
        if isinstance(first, SipUri) and first.lr:
            return self.remote_target.copy(), [route.copy() for route in route_set]
        uri = first.copy()
        if isinstance(uri, SipUri):
            uri.headers.clear()
        routes = [route.copy() for route in route_set[1:]]
        routes.append(NameAddr(self.remote_target.copy()))
        return uri, routes

    # -- incoming messages --------------------------------------------------------------

    def check_request(self, request: SipRequest) -> int | None:
        """Validate an in-dialog request (§12.2.2) and absorb its CSeq and target refresh.

        Returns the status to reject it with (500 when its CSeq is lower than the last one
        seen, which means it is out of order) or ``None`` when it is acceptable.
        """
        method = request.method
        if method != "ACK" and method != "CANCEL":
            remote = self.remote_cseq
            if remote is not None and request.cseq < remote:
                return 500
            self.remote_cseq = request.cseq
        if method in TARGET_REFRESH_METHODS and request.contacts:
            self.remote_target = request.contacts[0].uri.copy()
        return None

    def update_from_response(self, request: SipRequest, response: SipResponse) -> None:
        """Apply a response to one of our requests: early → confirmed on 2xx, and a 2xx (or
        tagged 1xx in an early dialog) to a target refresh request replaces the target."""
        status = response.status
        if status >= 300 or status < 101:
            return
        if status >= 200 and self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED
        refreshes = status >= 200 or self.state is DialogState.EARLY
        if request.method in TARGET_REFRESH_METHODS and refreshes and response.contacts:
            self.remote_target = response.contacts[0].uri.copy()

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def __repr__(self) -> str:
        return f"<Dialog {self.call_id} {self.local_tag}/{self.remote_tag} {self.state.value}>"


def _is_secure(request: SipRequest) -> bool:
    """§12.1: the dialog is secure when the request went over TLS to a sips URI."""
    uri = request.uri
    return isinstance(uri, SipUri) and uri.secure and request.vias[0].transport == "TLS"
