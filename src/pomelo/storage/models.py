"""Every table of every domain, gathered so Alembic and the drift check see one metadata."""

from pomelo.audit.models import AuditEntry
from pomelo.auth.models import ApiKey, AuthSession, Group, GroupMember, Role, Tenant, User
from pomelo.pbx.cdr_models import CallRecord
from pomelo.pbx.models import PhoneNumber, Registration, SipAccount, Trunk
from pomelo.recordings.models import Recording, RecordingParticipant
from pomelo.storage.base import Base
from pomelo.storage.eventlog import EventLogEntry

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "AuditEntry",
    "AuthSession",
    "CallRecord",
    "EventLogEntry",
    "Group",
    "GroupMember",
    "PhoneNumber",
    "Recording",
    "RecordingParticipant",
    "Registration",
    "Role",
    "SipAccount",
    "Tenant",
    "Trunk",
    "User",
    "metadata",
]
