"""Audit log of administrative changes: who changed what, when, from what to what."""
