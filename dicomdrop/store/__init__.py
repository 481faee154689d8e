"""The registry database: patients, pseudonyms, studies, jobs, audit (SQLAlchemy 2 + Alembic)."""
