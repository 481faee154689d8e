"""``dicomdrop reidentify``, ``dicomdrop lookup`` and ``dicomdrop audit`` (all audited)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.commands.jsonout import add_json_option, emit, timestamp
from dicomdrop.commands.registry import add_date_format_option, open_registry, open_store
from dicomdrop.store.auditchain import audit_key_from, current_user

# Exit statuses of ``dicomdrop lookup`` (1 is every command's error status; 2 is a usage error).
LOOKUP_FOUND = 0
LOOKUP_ERROR = 1
LOOKUP_NOBODY = 3
LOOKUP_AMBIGUOUS = 4


def register(sub: Any) -> None:
    """Add the re-identification commands."""
    p = sub.add_parser(
        "reidentify",
        help="who is behind a pseudonym, a pseudonymised StudyInstanceUID or AccessionNumber",
        description="Prints the names seen, birth date, identifiers and the studies with their "
        "original UIDs and accession numbers. Needs --reason; every query is audited.",
    )
    p.add_argument("pseudonym", nargs="?", default=None)
    p.add_argument("--study-uid", default=None, help="a pseudonymised StudyInstanceUID")
    p.add_argument("--accession", default=None, help="a pseudonymised AccessionNumber")
    p.add_argument("--reason", default="", help="why (required, kept in the audit log)")
    p.add_argument("--by", default=None, help="who asks (default: the OS user)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(p)
    p.set_defaults(func=run_reidentify)

    p = sub.add_parser(
        "lookup",
        help="the pseudonym of a person (printed alone); read-only, audited",
        description="Forward look-up by name (DICOM 'Family^Given' or free text), optionally "
        "birth date, sex and PatientID, with the registry's own decision. Nobody is registered "
        "and nothing but the audit row is written, so it runs beside a working daemon. Exit "
        f"status: {LOOKUP_FOUND} found, {LOOKUP_NOBODY} nobody matches, {LOOKUP_AMBIGUOUS} "
        f"ambiguous (candidates on stderr), {LOOKUP_ERROR} error. With --batch FILE.csv (columns "
        "name, birthdate, sex, PatientID, issuer as for 'registry import'): one CSV line per "
        "row on stdout (row, status, pseudonym, candidates); exit 0 when every row was looked "
        "up.",
    )
    p.add_argument("name", nargs="?", default=None)
    p.add_argument("--birth-date", default=None, metavar="YYYYMMDD")
    p.add_argument("--sex", default=None, choices=["M", "F", "O"])
    p.add_argument("--patient-id", default=None)
    p.add_argument("--issuer", default=None)
    p.add_argument("--batch", type=Path, default=None, metavar="FILE.csv")
    add_date_format_option(p)
    p.add_argument("--reason", default="", help="why (kept in the audit log)")
    p.add_argument("--by", default=None, help="who asks (default: the OS user)")
    add_config_option(p)
    p.set_defaults(func=run_lookup)

    p = sub.add_parser("audit", help="list audit events (re-identifications, edits), newest first")
    p.add_argument(
        "--verify",
        action="store_true",
        help="check the audit hash chain and name the first row that was changed or removed",
    )
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--action", default=None, help="only this action, e.g. reidentify")
    add_json_option(p)
    add_config_option(p)
    p.set_defaults(func=run_audit)


def run_reidentify(args: argparse.Namespace, ctx: Context) -> int:
    """Print the person behind the query; exit 1 when nobody is found."""
    from dicomdrop.store.reid import reidentify

    store = open_store(ctx)
    store.audit_key = audit_key_from(ctx.key)
    try:
        person = reidentify(
            store,
            min_reason_length=ctx.settings.security.min_reason_length,
            reason=args.reason,
            actor=args.by or current_user(),
            pseudonym=args.pseudonym,
            study_uid=args.study_uid,
            accession=args.accession,
        )
    finally:
        store.close()
    if person is None:
        print("dicomdrop: nobody found", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_as_dict(person), indent=2, ensure_ascii=False))
        return 0
    print(f"pseudonym: {person.pseudonym}")
    for name in person.names:
        print(f"name: {name}")
    print(f"birth date: {person.birth_date or '-'}")
    print(f"sex: {person.sex or '-'}")
    for issuer, value in person.identifiers:
        print(f"identifier: {value}" + (f" (issuer {issuer})" if issuer else ""))
    for study in person.studies:
        print(
            f"study: {study.original_study_uid} -> {study.new_study_uid} accession "
            f"{study.original_accession or '-'} -> {study.new_accession or '-'} date "
            f"{study.study_date or '-'} -> {study.shifted_date or '-'} job {study.job_id or '-'}"
        )
    return 0


def _as_dict(person: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(person)


def run_lookup(args: argparse.Namespace, ctx: Context) -> int:
    """Print the pseudonym alone (see the exit statuses in the command's description)."""
    from dicomdrop.store.decision import PatientIdentity

    if (args.name is None) == (args.batch is None):
        print("dicomdrop: lookup needs a NAME or --batch FILE.csv (one of them)", file=sys.stderr)
        return LOOKUP_ERROR
    if args.batch is not None:
        return _run_lookup_batch(args, ctx)
    identity = PatientIdentity(
        name=args.name,
        patient_id=args.patient_id,
        issuer=args.issuer,
        birth_date=args.birth_date,
        sex=args.sex,
    )
    (result,) = _look_up(ctx, [identity], actor=args.by or current_user(), reason=args.reason)
    if result.status == "ambiguous":
        print("dicomdrop: ambiguous, candidates: " + ", ".join(result.candidates), file=sys.stderr)
        return LOOKUP_AMBIGUOUS
    if result.pseudonym is None:
        print("dicomdrop: nobody matches", file=sys.stderr)
        return LOOKUP_NOBODY
    print(result.pseudonym)
    return LOOKUP_FOUND


def _look_up(ctx: Context, identities: list[Any], *, actor: str, reason: str) -> list[Any]:
    """The look-up results of ``identities``: with plain sqlite3 on a SQLite registry at the
    current schema (no SQLAlchemy import: see store/lookup.py), else through the store."""
    from dicomdrop.store.lookup import lookup_sqlite, open_sqlite

    settings = ctx.settings
    conn = open_sqlite(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    if conn is not None:
        try:
            return lookup_sqlite(
                conn,
                settings.registry,
                audit_key_from(ctx.key),
                identities,
                actor=actor,
                os_user=current_user(),
                reason=reason,
            )
        finally:
            conn.close()
    from dicomdrop.store.reid import lookup_many

    registry = open_registry(ctx)
    try:
        return lookup_many(registry, identities, actor=actor, reason=reason)
    finally:
        registry.store.close()


def _run_lookup_batch(args: argparse.Namespace, ctx: Context) -> int:
    from dicomdrop.store.demographics_table import read_demographics

    table = read_demographics(args.batch)
    identities, unreadable = table.identities(args.date_format)
    results = _look_up(
        ctx,
        [identity for _, identity in identities],
        actor=args.by or current_user(),
        reason=args.reason,
    )
    lines: dict[int, list[str]] = {
        number: [str(number), "error", "", reason] for number, reason in unreadable
    }
    for (number, _identity), result in zip(identities, results, strict=True):
        lines[number] = [
            str(number),
            result.status,
            result.pseudonym or "",
            " ".join(result.candidates),
        ]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["row", "status", "pseudonym", "candidates"])
    for number in sorted(lines):
        writer.writerow(lines[number])
    return LOOKUP_ERROR if unreadable else LOOKUP_FOUND


def run_audit(args: argparse.Namespace, ctx: Context) -> int:
    """Print audit rows, or (``--verify``) check their hash chain."""
    from dicomdrop.store.audit import list_events, verify_chain

    store = open_store(ctx)
    try:
        if args.verify:
            report = verify_chain(store, ctx.key)
        else:
            events = list_events(store, limit=args.limit, action=args.action)
    finally:
        store.close()
    if args.verify:
        older = f" ({report.unchained} written before the chain began)" if report.unchained else ""
        if report.first_broken is not None:
            print(
                f"dicomdrop: error: audit chain broken at row {report.first_broken}: "
                f"{report.problem} (a row was changed, or one before it removed or inserted)",
                file=sys.stderr,
            )
            return 1
        print(f"audit chain intact: {report.rows} rows{older}")
        return 0
    if args.json:
        rows = [
            {
                "id": e.id,
                "at": timestamp(e.at),
                "actor": e.actor,
                "action": e.action,
                "reason": e.reason,
                "subject": e.subject,
                "found": e.found,
                "details": e.details,
                "os_user": e.os_user,
            }
            for e in events
        ]
        emit("audit", {"events": rows})
        return 0
    for e in events:
        print(
            f"{e.at:%Y-%m-%d %H:%M:%S} {e.action} by {e.actor} (os user {e.os_user or '?'}) "
            f"{'found' if e.found else 'not found'} {e.subject or '-'} reason: {e.reason}"
        )
    return 0
