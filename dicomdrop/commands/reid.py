"""``dicomdrop reidentify``, ``dicomdrop lookup`` and ``dicomdrop audit`` (all audited)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.commands.jsonout import add_json_option, emit, timestamp
from dicomdrop.commands.registry import open_registry, open_store
from dicomdrop.store.audit import current_user


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
        help="the pseudonym of a person (printed alone; exit 1 when nobody matches)",
        description="Forward look-up by name (DICOM 'Family^Given' or free text), optionally "
        "birth date, sex and PatientID. Nobody is registered. Audited.",
    )
    p.add_argument("name")
    p.add_argument("--birth-date", default=None, metavar="YYYYMMDD")
    p.add_argument("--sex", default=None, choices=["M", "F", "O"])
    p.add_argument("--patient-id", default=None)
    p.add_argument("--issuer", default=None)
    p.add_argument("--reason", default="", help="why (kept in the audit log)")
    p.add_argument("--by", default=None, help="who asks (default: the OS user)")
    add_config_option(p)
    p.set_defaults(func=run_lookup)

    p = sub.add_parser("audit", help="list audit events (re-identifications, edits), newest first")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--action", default=None, help="only this action, e.g. reidentify")
    add_json_option(p)
    add_config_option(p)
    p.set_defaults(func=run_audit)


def run_reidentify(args: argparse.Namespace, ctx: Context) -> int:
    """Print the person behind the query; exit 1 when nobody is found."""
    from dicomdrop.store.reid import reidentify

    store = open_store(ctx)
    try:
        person = reidentify(
            store,
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
    """Print the pseudonym alone; status 1 when nobody (or more than one person) matches."""
    from dicomdrop.store.registry import PatientIdentity
    from dicomdrop.store.reid import lookup

    registry = open_registry(ctx)
    try:
        result = lookup(
            registry,
            PatientIdentity(
                name=args.name,
                patient_id=args.patient_id,
                issuer=args.issuer,
                birth_date=args.birth_date,
                sex=args.sex,
            ),
            actor=args.by or current_user(),
            reason=args.reason,
        )
    finally:
        registry.store.close()
    if result.pseudonym is None:
        if result.status == "ambiguous":
            print(
                "dicomdrop: ambiguous, candidates: " + ", ".join(result.candidates),
                file=sys.stderr,
            )
        else:
            print("dicomdrop: nobody matches", file=sys.stderr)
        return 1
    print(result.pseudonym)
    return 0


def run_audit(args: argparse.Namespace, ctx: Context) -> int:
    """Print audit rows."""
    from dicomdrop.store.audit import list_events

    store = open_store(ctx)
    try:
        events = list_events(store, limit=args.limit, action=args.action)
    finally:
        store.close()
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
            }
            for e in events
        ]
        emit("audit", {"events": rows})
        return 0
    for e in events:
        print(
            f"{e.at:%Y-%m-%d %H:%M:%S} {e.action} by {e.actor} "
            f"{'found' if e.found else 'not found'} {e.subject or '-'} reason: {e.reason}"
        )
    return 0
