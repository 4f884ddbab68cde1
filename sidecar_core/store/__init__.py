"""The workflow store: SQLAlchemy models and the Alembic migrations, its only schema source."""
