"""Pomelo: a self-hosted, multi-tenant contact center and virtual PBX."""

__version__ = "0.1.0"
