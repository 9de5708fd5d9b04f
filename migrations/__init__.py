"""Alembic migrations of the tracking database (shipped inside the wheel)."""
