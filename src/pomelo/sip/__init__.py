"""SIP protocol library. Imports nothing from the rest of Pomelo (import-linter enforces it)."""
