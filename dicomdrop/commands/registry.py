"""``dicomdrop db upgrade`` and ``dicomdrop registry ...``: the patient registry by hand."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomdrop.commands import Context, add_config_option
from dicomdrop.commands.jsonout import add_json_option, emit, timestamp
from dicomdrop.errors import DicomdropError
from dicomdrop.store.auditchain import audit_key_from, current_user

if TYPE_CHECKING:
    from dicomdrop.store.db import Store


def open_store(ctx: Context) -> Store:
    """The configured store, migrated to the current schema."""
    from dicomdrop.store.db import Store

    settings = ctx.settings
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    # Audited commands chain their rows with it; without a key, writing a row says so.
    with contextlib.suppress(DicomdropError):
        store.audit_key = audit_key_from(ctx.key)
    return store


def open_registry(ctx: Context) -> Any:
    """The configured registry (store + key + settings)."""
    from dicomdrop.store.registry import Registry

    return Registry(open_store(ctx), ctx.key, ctx.settings.registry)


def add_actor_options(parser: argparse.ArgumentParser, *, reason_required: bool = True) -> None:
    """``--by NAME`` (default: the OS user) and ``--reason TEXT`` for audited commands."""
    parser.add_argument("--by", default=None, help="who does this (default: the OS user)")
    parser.add_argument(
        "--reason", required=reason_required, default="", help="why (kept in the audit log)"
    )


def add_date_format_option(parser: argparse.ArgumentParser) -> None:
    """``--date-format`` for CSV files whose birth dates are written day/month or month/day."""
    parser.add_argument(
        "--date-format",
        default=None,
        choices=["dd/mm/yyyy", "mm/dd/yyyy"],
        help="how birth dates with the year last (31/12/1980, 12/31/1980, also with '-') are "
        "written; default: as the file shows, else such dates are refused",
    )


def register(sub: Any) -> None:
    """Add ``db`` and ``registry`` commands."""
    db = sub.add_parser("db", help="the registry database")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION")
    dbsub.required = True
    p = dbsub.add_parser("upgrade", help="apply pending schema migrations (also done at start)")
    add_config_option(p)
    p.set_defaults(func=run_db_upgrade)

    reg = sub.add_parser("registry", help="patients, pseudonyms, demographics and links")
    rsub = reg.add_subparsers(dest="registry_command", metavar="ACTION")
    rsub.required = True

    p = rsub.add_parser(
        "import",
        help="register or link every row of a demographics CSV",
        description="CSV with a 'name' column and optional birthdate, sex, PatientID columns "
        "(';' or ',' delimited). Each row is linked to a known patient or registered; "
        "ambiguous rows are listed and wait for 'registry resolve'. A birth date or sex that "
        "cannot be read stops the import before anything is written, with the row numbers.",
    )
    p.add_argument("csv", type=Path)
    add_date_format_option(p)
    add_actor_options(p)
    add_config_option(p)
    p.set_defaults(func=run_import_demographics)

    p = rsub.add_parser(
        "export-demographics",
        help="write the pseudonymised demographics, missing patients and the key file",
        description="Writes demographics_pseudonymized.csv (name replaced by the pseudonym, "
        "[registry] export_drop_columns removed), demographics_pseudonymized_seen.csv (only "
        "patients with studies), missing_from_dicom.csv and key.csv (both mode 0600).",
    )
    p.add_argument("csv", type=Path)
    p.add_argument("out_dir", type=Path)
    add_date_format_option(p)
    add_actor_options(p)
    add_config_option(p)
    p.set_defaults(func=run_export_demographics)

    p = rsub.add_parser(
        "import-links",
        help="import accession links 'key, serial' (dicom_pseudon's links CSV)",
        description="Two columns: the AccessionNumber (key) and its serial. The delimiter is "
        "detected unless given; a header line is detected unless --header/--no-header. "
        "Duplicate keys are reported; the first serial is kept.",
    )
    p.add_argument("csv", type=Path)
    p.add_argument("--delimiter", default=None, help="field delimiter (default: detected)")
    p.add_argument("--header", action=argparse.BooleanOptionalAction, default=None)
    add_config_option(p)
    p.set_defaults(func=run_import_links)

    p = rsub.add_parser("pending", help="list ambiguous matches waiting for 'registry resolve'")
    p.add_argument("--show-names", action="store_true", help="also print names and birth dates")
    add_json_option(p)
    add_config_option(p)
    p.set_defaults(func=run_pending)

    p = rsub.add_parser("resolve", help="settle an ambiguous match (audited)")
    p.add_argument("pending_id", type=int, metavar="ID")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--link", metavar="PSEUDONYM", help="the same person as this patient")
    how.add_argument("--new", action="store_true", help="a new patient")
    add_actor_options(p)
    add_config_option(p)
    p.set_defaults(func=run_resolve)

    p = rsub.add_parser(
        "cohort",
        help="the pseudonyms of a cohort of studies, as CSV on stdout (audited)",
        description="FILE lists original StudyInstanceUIDs or AccessionNumbers, one per line "
        "('-' reads stdin). Prints key, pseudonym, pseudonymised StudyInstanceUID and "
        "AccessionNumber per study (empty when not delivered).",
    )
    p.add_argument("file", metavar="FILE")
    add_actor_options(p)
    add_config_option(p)
    p.set_defaults(func=run_cohort)

    p = rsub.add_parser("merge", help="merge patient OTHER into KEEP (audited)")
    p.add_argument("keep", metavar="KEEP")
    p.add_argument("other", metavar="OTHER")
    add_actor_options(p)
    add_config_option(p)
    p.set_defaults(func=run_merge)

    p = rsub.add_parser(
        "split", help="move names, IDs or studies of a patient to a new patient (audited)"
    )
    p.add_argument("pseudonym")
    p.add_argument("--name", action="append", default=[], help="a raw name variant to move")
    p.add_argument("--id", action="append", default=[], dest="ids", help="a PatientID to move")
    p.add_argument(
        "--study", action="append", default=[], help="a StudyInstanceUID (original or new)"
    )
    add_actor_options(p)
    add_config_option(p)
    p.set_defaults(func=run_split)


def run_db_upgrade(args: argparse.Namespace, ctx: Context) -> int:
    """Apply migrations and print the schema revision."""
    from dicomdrop.store.db import Store

    store = Store.open(ctx.settings.store_url, busy_timeout_ms=ctx.settings.store.busy_timeout_ms)
    try:
        print(f"schema revision: {store.schema_revision()}")
    finally:
        store.close()
    return 0


def run_import_demographics(args: argparse.Namespace, ctx: Context) -> int:
    """Import a demographics file; ambiguous rows exit with status 1."""
    from dicomdrop.store.demographics import import_demographics

    registry = open_registry(ctx)
    try:
        report = import_demographics(
            registry,
            args.csv,
            actor=args.by or current_user(),
            reason=args.reason,
            date_format=args.date_format,
        )
    finally:
        registry.store.close()
    print(
        f"matched {report.matched}, new {report.new}, ambiguous {len(report.ambiguous)}, "
        f"skipped {len(report.skipped)}, refused {len(report.refused)}"
    )
    for row, pending_id in report.ambiguous:
        print(f"row {row}: ambiguous, pending match #{pending_id} (dicomdrop registry resolve)")
    for row in report.skipped:
        print(f"row {row}: skipped, no name and no PatientID")
    for row, code in report.refused:
        print(f"row {row}: refused ({code}), see docs/quarantine.md")
    return 1 if report.ambiguous or report.skipped or report.refused else 0


def run_export_demographics(args: argparse.Namespace, ctx: Context) -> int:
    """Export the pseudonymised demographics."""
    from dicomdrop.store.demographics import export_demographics

    registry = open_registry(ctx)
    try:
        export = export_demographics(
            registry,
            args.csv,
            args.out_dir,
            drop_columns=ctx.settings.registry.export_drop_columns,
            actor=args.by or current_user(),
            reason=args.reason,
            date_format=args.date_format,
        )
    finally:
        registry.store.close()
    print(
        f"rows {export.rows}, seen in DICOM {export.seen}, missing from DICOM {export.missing}, "
        f"unknown to the registry {export.unmatched}"
    )
    for path in export.files.values():
        print(path)
    return 0


def run_import_links(args: argparse.Namespace, ctx: Context) -> int:
    """Import accession links."""
    from dicomdrop.store.links import import_links

    store = open_store(ctx)
    try:
        report = import_links(store, args.csv, delimiter=args.delimiter, header=args.header)
    finally:
        store.close()
    print(f"links added {report.added}, already known {report.unchanged}")
    for key in report.duplicates:
        print(f"warning: duplicate key {key}: first serial kept")
    for line in report.malformed:
        print(f"warning: line {line} is not 'key, serial': skipped")
    return 0


def run_pending(args: argparse.Namespace, ctx: Context) -> int:
    """List open pending matches (names only with --show-names)."""
    from dicomdrop.store.curation import list_pending

    registry = open_registry(ctx)
    try:
        pending = list_pending(registry)
    finally:
        registry.store.close()
    if args.json:
        items = []
        for item in pending:
            entry: dict[str, Any] = {
                "id": item.id,
                "created_at": timestamp(item.created_at),
                "seen_in": item.seen_in,
                "score": item.score,
                "candidates": [{"pseudonym": p, "score": sc} for p, sc in item.candidates],
            }
            if args.show_names:
                who = item.identity
                entry["identity"] = {
                    "name": who.name,
                    "birth_date": who.birth_date,
                    "sex": who.sex,
                    "patient_id": who.patient_id,
                }
            items.append(entry)
        emit("registry-pending", {"pending": items})
        return 0
    if not pending:
        print("no pending matches")
    for item in pending:
        candidates = ", ".join(f"{p} ({s:.1f})" for p, s in item.candidates)
        line = (
            f"#{item.id} {item.created_at:%Y-%m-%d %H:%M} {item.seen_in} candidates: {candidates}"
        )
        if args.show_names:
            who = item.identity
            line += f" | name {who.name!r} birth {who.birth_date or '-'} sex {who.sex or '-'}"
            line += f" id {who.patient_id or '-'}"
        print(line)
    return 0


def run_resolve(args: argparse.Namespace, ctx: Context) -> int:
    """Settle one pending match."""
    from dicomdrop.store.curation import resolve

    registry = open_registry(ctx)
    try:
        pseudonym = resolve(
            registry,
            args.pending_id,
            actor=args.by or current_user(),
            reason=args.reason,
            link=args.link,
            new=args.new,
        )
    finally:
        registry.store.close()
    print(pseudonym)
    return 0


def run_cohort(args: argparse.Namespace, ctx: Context) -> int:
    """Print the cohort's pseudonyms as CSV."""
    import csv
    import sys

    from dicomdrop.store.reid import cohort_pseudonyms

    if args.file == "-":
        keys = sys.stdin.read().split()
    else:
        keys = Path(args.file).read_text(encoding="utf-8").split()
    store = open_store(ctx)
    try:
        rows = cohort_pseudonyms(store, keys, actor=args.by or current_user(), reason=args.reason)
    finally:
        store.close()
    writer = csv.writer(sys.stdout)
    writer.writerow(["key", "pseudonym", "pseudonymised_study_uid", "pseudonymised_accession"])
    for row in rows:
        writer.writerow([row.key, row.pseudonym, row.new_study_uid, row.new_accession])
    return 0


def run_merge(args: argparse.Namespace, ctx: Context) -> int:
    """Merge two patients."""
    from dicomdrop.store.curation import merge

    registry = open_registry(ctx)
    try:
        merge(registry, args.keep, args.other, actor=args.by or current_user(), reason=args.reason)
    finally:
        registry.store.close()
    print(f"{args.other} merged into {args.keep}")
    return 0


def run_split(args: argparse.Namespace, ctx: Context) -> int:
    """Split a patient."""
    from dicomdrop.store.curation import split

    registry = open_registry(ctx)
    try:
        new = split(
            registry,
            args.pseudonym,
            actor=args.by or current_user(),
            reason=args.reason,
            names=args.name,
            identifiers=args.ids,
            study_uids=args.study,
        )
    finally:
        registry.store.close()
    print(new)
    return 0
