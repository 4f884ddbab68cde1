"""The workflow store: SQLAlchemy models and the Alembic migrations that are its only schema source."""
