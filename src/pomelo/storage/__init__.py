"""Database access: SQLAlchemy models base, engine/session management, migrations, unit of work."""
