"""Typed SQLAlchemy 2 models of the registry database.

Identity data (names, birth dates, patient IDs, original UIDs and accession numbers) lives here
because this database *is* the re-identification key: keep it as private as the secret key. The
secret key itself is never stored.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current time in UTC (timezone-aware)."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable names for migrations)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Patient(Base):
    """One person, known under one pseudonym."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(80), unique=True)
    pseudonym_prefix: Mapped[str] = mapped_column(String(16))
    pseudonym_length: Mapped[int] = mapped_column(Integer)
    birth_date: Mapped[str | None] = mapped_column(String(8), index=True)
    sex: Mapped[str | None] = mapped_column(String(1))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    names: Mapped[list[NameVariant]] = relationship(
        back_populates="patient", cascade="all, delete-orphan"
    )
    identifiers: Mapped[list[Identifier]] = relationship(
        back_populates="patient", cascade="all, delete-orphan"
    )
    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class NameVariant(Base):
    """A name as seen (``raw``) and one normalised form of it (one row per PN group)."""

    __tablename__ = "name_variants"
    __table_args__ = (UniqueConstraint("patient_id", "raw", "normalized"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    raw: Mapped[str] = mapped_column(String(400))
    normalized: Mapped[str] = mapped_column(String(400), index=True)
    seen_in: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="names")


class NameKey(Base):
    """A blocking key of a patient's names (a token or its phonetic code), indexed for lookup."""

    __tablename__ = "name_keys"
    __table_args__ = (
        UniqueConstraint("patient_id", "key"),
        Index("ix_name_keys_key_patient_id", "key", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(120))


class Identifier(Base):
    """A PatientID under its issuer (empty string when the issuer is unknown)."""

    __tablename__ = "identifiers"
    __table_args__ = (UniqueConstraint("issuer", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    issuer: Mapped[str] = mapped_column(String(200), default="")
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="identifiers")


class Study(Base):
    """A study delivered under a pseudonym: original and pseudonymised UID, accession, date."""

    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("patient_id", "original_study_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    original_study_uid: Mapped[str] = mapped_column(String(64))
    new_study_uid: Mapped[str] = mapped_column(String(64), index=True)
    original_accession: Mapped[str | None] = mapped_column(String(64))
    new_accession: Mapped[str | None] = mapped_column(String(64), index=True)
    study_date: Mapped[str | None] = mapped_column(String(8))
    shifted_date: Mapped[str | None] = mapped_column(String(8))
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")


class Job(Base):
    """One drop moving through the pipeline."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    drop_name: Mapped[str] = mapped_column(String(1000))
    state: Mapped[str] = mapped_column(String(20), index=True)
    stage: Mapped[str | None] = mapped_column(String(40))
    error_code: Mapped[str | None] = mapped_column(String(80))
    message: Mapped[str | None] = mapped_column(Text)
    last_finished_stage: Mapped[str | None] = mapped_column(String(40))
    # Progress of the running stage (files done of total), for status and jobs.
    files_done: Mapped[int | None] = mapped_column(Integer)
    files_total: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobEvent(Base):
    """A state change or stage boundary of a job."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(20))
    stage: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str | None] = mapped_column(String(20))
    details: Mapped[dict[str, object] | None] = mapped_column(JSON)


class AuditEvent(Base):
    """Who looked up or changed identity data, when and why."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40), index=True)
    reason: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(200))
    found: Mapped[bool] = mapped_column(Boolean, default=True)
    details: Mapped[dict[str, object] | None] = mapped_column(JSON)
    # The operating-system user who ran the command (``actor`` is the free-text ``--by``).
    os_user: Mapped[str | None] = mapped_column(String(200))
    # The keyed hash chain (see store/audit.py): the previous row's hash and this row's.
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))


class DaemonHeartbeat(Base):
    """A running ``dicomdrop watch``: who it is, since when, and when it last said it lives.

    The row is written at start, refreshed every few seconds and deleted at a clean stop; a row
    whose ``beat_at`` is old belongs to a daemon that was killed or lost its host.
    """

    __tablename__ = "daemon_heartbeats"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    beat_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[str] = mapped_column(String(40))
    workers: Mapped[int] = mapped_column(Integer, default=0)


class AccessionLink(Base):
    """dicom_pseudon's link: a study whose AccessionNumber is ``key`` gets ``serial``."""

    __tablename__ = "accession_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    serial: Mapped[str] = mapped_column(String(200))


class PendingMatch(Base):
    """An ambiguous patient waiting for ``dicomdrop registry resolve``."""

    __tablename__ = "pending_matches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seen_in: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="open", index=True)
    name: Mapped[str] = mapped_column(String(400))
    patient_id: Mapped[str | None] = mapped_column(String(200))
    issuer: Mapped[str | None] = mapped_column(String(200))
    birth_date: Mapped[str | None] = mapped_column(String(8))
    sex: Mapped[str | None] = mapped_column(String(1))
    other_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    score: Mapped[float] = mapped_column(default=0.0)
    candidates: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    resolution: Mapped[str | None] = mapped_column(String(80))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(200))


class ConsoleUser(Base):
    """A local user of the steward console: a role and an Argon2 password hash (never the
    password)."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Raised by a logout or a disable: session cookies carry the generation they began in, and
    #: one of an older generation is refused (kept here, so a restart forgets no logout).
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Delivery(Base):
    """One verified instance on its way to one network target (C-STORE or STOW-RS).

    ``state``: pending (to send), sending (recorded just before the send: after a crash such a
    row is in doubt and is checked with the receiver where it can be), sent, refused (a
    permanent failure status; the job is quarantined). UIDs are the pseudonymised ones.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("target", "job_id", "item"),
        Index("ix_deliveries_target_state", "target", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(40))
    item: Mapped[str] = mapped_column(String(400))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
