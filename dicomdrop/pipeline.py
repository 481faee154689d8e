"""The pipeline: moves one claimed job through the stages. The only place that knows the order.

Job stages: unpack -> sort -> group, then for each patient group:
screen -> match -> deid -> verify -> pack -> deliver; and finally the originals are kept.

State and resumption. A job lives in ``work/<job>/``; the claimed drop stays untouched in
``work/<job>/drop/`` until the job is finished. Job-level stages are cheap to redo, so a resumed
job rolls them back to the claimed drop and redoes them (unpacking is deterministic). A patient
group is finished when its archive was renamed into the outbox (atomic) or its files were moved
to quarantine; that outcome is written to ``work/<job>/state/`` and to the store, and a resumed
job skips finished groups. An archive found in the outbox under the group's final name proves
delivery even if the process died before recording it. Nothing reaches the outbox except after
``verify`` found no trace of the patient.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy.exc

from dicomdrop.archives import pack_tree, unpack_drop
from dicomdrop.archives.pack import INCOMING_DIR, pack_spooled
from dicomdrop.archives.spool import read_spooled
from dicomdrop.config import Settings, load_settings
from dicomdrop.daemon import metrics
from dicomdrop.daemon.claim import new_job_id
from dicomdrop.deid.verify import (
    IdentityTokens,
    build_identity_tokens,
    require_clean,
    verify_entries,
    verify_tree,
)
from dicomdrop.delivery.ledger import DeliveryLedger
from dicomdrop.delivery.outgoing import outgoing_root
from dicomdrop.delivery.outgoing import stage as stage_outgoing
from dicomdrop.errors import ClaimError, QuarantineError, StoreError
from dicomdrop.quarantine import Quarantine, QuarantineEntry, write_json_atomic
from dicomdrop.secret import load_key
from dicomdrop.stages.deidentify import GroupOutput, deidentify_group, make_executor
from dicomdrop.stages.group import PatientGroup, group_instances
from dicomdrop.stages.sort import sort_tree
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore
from dicomdrop.store.registry import PatientIdentity, Registry

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
REPORT_FILE = "report.csv"  # next to outcome.json: one row per file of the drop
FINAL_STATES = frozenset({"delivered", "quarantined", "failed", "waiting"})


@dataclass
class GroupResult:
    """The outcome of one patient group."""

    key: str
    outcome: str  # delivered | quarantined | waiting
    pseudonym: str | None = None
    archive: str | None = None
    instances: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0  # byte-identical copies of a delivered instance, not delivered again
    # One row per file of the group: [path in the drop, outcome, code or type, delivered as].
    report: list[list[str]] = field(default_factory=list)

    def add_rows(self, files: Iterable[str], outcome: str, code: str, output: str = "") -> None:
        """Report ``files`` with one outcome."""
        self.report.extend([str(f), outcome, code, output] for f in files)

    @property
    def reported(self) -> set[str]:
        """The files that have a row already."""
        return {row[0] for row in self.report}


@dataclass
class JobOutcome:
    """What one job did: its final state, deliveries, quarantines and deletions by type."""

    job_id: str
    state: str
    groups: list[GroupResult] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    report: list[list[str]] = field(default_factory=list)  # rows of the job-level stages

    @property
    def delivered(self) -> list[GroupResult]:
        """The groups that reached the outbox."""
        return [g for g in self.groups if g.outcome == "delivered"]


def job_dir(settings: Settings, job_id: str) -> Path:
    """The work folder of a job."""
    return settings.paths.work / job_id


def claim_copy(source: Path, settings: Settings, jobs: JobStore, *, move: bool = False) -> str:
    """Take ``source`` (a folder or archive outside the inbox) into a new job, by copy or move.

    Used by ``dicomdrop process`` and ``quarantine retry``; the daemon claims from the inbox
    with its own atomic rename.
    """
    job_id = new_job_id()
    folder = job_dir(settings, job_id)
    target = folder / "drop" / source.name
    target.parent.mkdir(parents=True)
    try:
        if move:
            shutil.move(source, target)
        elif source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            try:
                # Same file system: a second name for the same bytes, nothing copied. The job
                # only reads its drop, and moving or deleting the link later leaves the input
                # alone.
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
    except OSError as exc:
        # A partial copy must not be adopted later as a drop: the input is still where it
        # was. After a failed move whose target exists, the input may be partly gone: the
        # target is kept (no loss), and adopted at the next start of the daemon.
        if not move or not target.exists():
            shutil.rmtree(folder, ignore_errors=True)
        # No path in the message: file names inside a drop may name the patient.
        failures = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else None
        if isinstance(failures, list):
            reason = f"{len(failures)} file(s) could not be copied"
        else:
            reason = exc.strerror or type(exc).__name__
        raise ClaimError(f"cannot take an input into the work folder ({reason})") from exc
    write_json_atomic(
        folder / JOB_FILE,
        {"job": job_id, "drop_name": source.name, "claimed_at": _now(), "pid": os.getpid()},
    )
    jobs.create(job_id, drop_name=source.name)
    return job_id


class Pipeline:
    """Runs claimed jobs to a final state. One instance per process."""

    def __init__(
        self,
        settings: Settings,
        key: bytes,
        store: Store,
        *,
        file_workers: int = 1,
        on_stage: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.key = key
        self.store = store
        self.jobs = JobStore(store)
        self.registry = Registry(store, key, settings.registry)
        self.quarantine = Quarantine(settings.paths.quarantine)
        self.file_workers = file_workers
        self._executor: Executor | None = None
        self._on_stage = on_stage

    def close(self) -> None:
        """Stop the per-file worker pool, if any."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    @property
    def executor(self) -> Executor | None:
        """The per-file worker pool, created on first use."""
        if self._executor is None and self.file_workers > 1:
            self._executor = make_executor(self.file_workers)
        return self._executor

    # --- the job loop --------------------------------------------------------------------------

    def run(self, job_id: str) -> JobOutcome:
        """Run (or resume) one job to its final state and return what happened.

        Operational failures (store unreachable, disk full) propagate and leave the job
        unfinished, to be resumed; anything else about the data ends in quarantine.
        """
        record = self.jobs.get(job_id)
        if record is None:
            raise StoreError(f"job {job_id} is not in the store")
        if record.state in FINAL_STATES:
            return self._load_outcome(job_id, record.state)
        folder = job_dir(self.settings, job_id)
        drop = self._drop_path(folder, job_id)
        if drop is None:
            message = "the claimed drop is gone from work, originals and quarantine"
            self.jobs.set_state(job_id, "failed", error_code="job.drop_missing", message=message)
            log.error("job %s: %s", job_id, message)
            return JobOutcome(job_id=job_id, state="failed")
        self.jobs.set_state(job_id, "running")
        outcome = JobOutcome(job_id=job_id, state="running")
        log.info("job %s: started", job_id)
        try:
            groups = self._prepare(job_id, folder, drop, outcome)
        except QuarantineError as exc:
            self._quarantine_drop(job_id, drop, exc)
            outcome.state = "quarantined"
            outcome.quarantined[exc.code] = outcome.quarantined.get(exc.code, 0) + 1
            outcome.report = [[drop.name, "quarantined", exc.code, ""]]
            self._finish(job_id, folder, outcome, keep_original=False)
            return outcome
        for index, group in enumerate(groups):
            others = [g for g in groups if g is not group]
            outcome.groups.append(self._run_group(job_id, folder, group, index, others))
        for g in outcome.groups:
            for code, n in g.quarantined.items():
                outcome.quarantined[code] = outcome.quarantined.get(code, 0) + n
            if g.duplicates:
                outcome.deleted["duplicate"] = outcome.deleted.get("duplicate", 0) + g.duplicates
        if any(g.outcome == "waiting" for g in outcome.groups):
            outcome.state = "waiting"
        elif outcome.quarantined:
            outcome.state = "quarantined"
        else:
            outcome.state = "delivered"
        self._finish(job_id, folder, outcome, keep_original=True)
        return outcome

    def _prepare(
        self, job_id: str, folder: Path, drop: Path, outcome: JobOutcome
    ) -> list[PatientGroup]:
        """Unpack, sort and group: redone from the claimed drop on every (re)start."""
        unpacked = folder / "unpacked"
        with self._stage(job_id, "unpack"):
            if unpacked.exists():
                shutil.rmtree(unpacked)
            self._check_free_space(drop)
            unpack_drop(drop, unpacked, self.settings.archives)
        with self._stage(job_id, "sort") as details:
            sorted_files = sort_tree(unpacked, self.settings.sort)
            outcome.deleted = dict(sorted_files.deleted)
            outcome.report = [
                [str(f), "deleted", kind, ""] for f, kind in sorted_files.deleted_files
            ]
            details.update(deleted=dict(sorted_files.deleted), dicom=len(sorted_files.dicom))
            if sorted_files.unknown:
                unknown = [str(p) for p in sorted_files.unknown]
                self.quarantine.put_files(
                    job_id,
                    QuarantineEntry(
                        "sort.unknown_file",
                        "sort",
                        "files that are neither DICOM nor a known deletable type",
                        tuple(unknown),
                    ),
                    unpacked,
                )
                outcome.quarantined["sort.unknown_file"] = len(unknown)
                outcome.report += [[f, "quarantined", "sort.unknown_file", ""] for f in unknown]
        with self._stage(job_id, "group") as details:
            grouped = group_instances(
                unpacked, sorted_files.dicom, self.settings.screen, executor=self.executor
            )
            if grouped.unreadable:
                files = tuple(str(p) for p in grouped.unreadable)
                self.quarantine.put_files(
                    job_id,
                    QuarantineEntry(
                        "dicom.unreadable",
                        "group",
                        "DICOM files whose header cannot be read",
                        files,
                    ),
                    unpacked,
                )
                outcome.quarantined["dicom.unreadable"] = len(files)
                outcome.report += [[f, "quarantined", "dicom.unreadable", ""] for f in files]
            details.update(groups=len(grouped.groups))
        if not grouped.groups and not outcome.quarantined and not outcome.deleted:
            raise QuarantineError("drop.empty", "the drop holds no files", stage="sort")
        return sorted(grouped.groups, key=lambda g: g.key)

    # --- one patient group ---------------------------------------------------------------------

    def _run_group(
        self,
        job_id: str,
        folder: Path,
        group: PatientGroup,
        index: int,
        others: Sequence[PatientGroup],
    ) -> GroupResult:
        """Run one patient group (``others``: the drop's other groups, whose identities are
        searched for too), or return its recorded result when it finished before."""
        marker = folder / "state" / f"group-{index}.json"
        if marker.exists():
            data = json.loads(marker.read_text(encoding="utf-8"))
            return GroupResult(**data)
        unpacked = folder / "unpacked"
        # Filled as the group goes: a quarantine half-way keeps what was decided before it.
        result = GroupResult(key=group.key, outcome="delivered")
        try:
            self._process_group(job_id, folder, group, index, result, others)
        except (StoreError, sqlalchemy.exc.OperationalError):
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            self._quarantine_group(job_id, group, unpacked, _internal(exc), result)
        except QuarantineError as exc:
            self._quarantine_group(job_id, group, unpacked, exc, result)
        except Exception as exc:
            log.exception("job %s: group %d failed", job_id, index)
            self._quarantine_group(job_id, group, unpacked, _internal(exc), result)
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, result.__dict__)
        return result

    def _process_group(
        self,
        job_id: str,
        folder: Path,
        group: PatientGroup,
        index: int,
        result: GroupResult,
        others: Sequence[PatientGroup],
    ) -> None:
        """Screen, match, de-identify, verify and deliver one group, recording into ``result``;
        a QuarantineError for the files not yet reported is raised to the caller."""
        unpacked = folder / "unpacked"

        with self._stage(job_id, "screen", group=index) as details:
            passed, screened = self._screen(group)
            passed, duplicates, conflicting = split_duplicates(group, passed, unpacked)
            if conflicting:
                screened["screen.duplicate_uid"] = tuple(str(p) for p in conflicting)
            result.duplicates = len(duplicates)
            result.add_rows(map(str, duplicates), "deleted", "duplicate")
            for code, files in screened.items():
                self.quarantine.put_files(
                    job_id,
                    QuarantineEntry(code, "screen", _SCREEN_MESSAGES.get(code, code), files),
                    unpacked,
                )
                result.quarantined[code] = len(files)
                result.add_rows(files, "quarantined", code)
            details.update(
                passed=len(passed),
                screened=sum(len(f) for f in screened.values()),
                duplicates=len(duplicates),
            )
        if not passed:
            result.outcome = "quarantined"
            return

        with self._stage(job_id, "match", group=index):
            identity = PatientIdentity(
                name=group.patient_name,
                patient_id=group.patient_id or None,
                issuer=group.issuer or None,
                birth_date=group.birth_date or None,
                sex=group.sex or None,
                other_ids=tuple(group.other_patient_ids),
            )
            if not self.registry.identifiable(identity):
                raise QuarantineError(
                    "match.no_identity",
                    "the instances carry neither a usable PatientName nor a PatientID, so no "
                    "pseudonym can be kept for this person; add them (or confirm the data is "
                    "anonymous and release it)",
                    stage="match",
                    files=[str(p) for p in passed],
                )
            match = self.registry.match_or_register(identity, seen_in=f"job:{job_id}")
            if match.status == "ambiguous":
                raise QuarantineError(
                    "match.ambiguous",
                    f"patient matches several registry entries closely (pending match "
                    f"{match.pending_id}); settle it with 'dicomdrop registry resolve "
                    f"{match.pending_id}' then 'dicomdrop quarantine retry {job_id}'",
                    stage="match",
                    files=[str(p) for p in passed],
                )
            assert match.pseudonym is not None
            pseudonym = match.pseudonym
            result.pseudonym = pseudonym
            accession = self._linked_accession(group, passed)

        variants = {group.patient_name, *group.other_patient_names}
        variants.update(self.registry.name_variants(pseudonym))
        ids = {group.patient_id, *group.other_patient_ids, *self.registry.identifiers(pseudonym)}
        ids.discard("")
        # Built before de-identification: each output is scanned as it is produced.
        tokens = self._identity_tokens(group, variants, ids, others)
        tree = folder / "out" / f"group-{index}"
        with self._stage(job_id, "deid", group=index) as details:
            output = deidentify_group(
                sources=[unpacked / p for p in passed],
                tree=tree,
                pseudonym=pseudonym,
                key=self.key,
                settings=self.settings.deid,
                name_variants=sorted(v for v in variants if v),
                patient_ids=sorted(i for i in ids if i),
                accession_number=accession,
                executor=self.executor,
                manifest={"job": job_id, "profile": self.settings.deid.profile},
                tokens=tokens,
                zip_entries=(
                    self.settings.archives
                    if self.settings.archives.output_format == "zip"
                    else None
                ),
            )
            failed = tuple(str(Path(o.source).relative_to(unpacked)) for o in output.failed)
            if failed:
                codes = Counter(o.error_code or "deid.failed" for o in output.failed)
                self.quarantine.put_files(
                    job_id,
                    QuarantineEntry(
                        codes.most_common(1)[0][0],
                        "deid",
                        "instances the de-identification engine could not process",
                        failed,
                    ),
                    unpacked,
                )
                for code, n in codes.items():
                    result.quarantined[code] = result.quarantined.get(code, 0) + n
                for o, relative in zip(output.failed, failed, strict=True):
                    result.add_rows([relative], "quarantined", o.error_code or "deid.failed")
            details.update(instances=output.files, failed=len(failed))
        if output.files == 0:
            output.remove()
            result.outcome = "quarantined"
            return

        with self._stage(job_id, "verify", group=index) as details:
            prescanned = output.scanned
            if not self._tokens_cover(group, output):
                # An output's original UID or accession number was not in the group headers
                # (cannot happen for files read alike): rescan everything with all of them.
                tokens = self._identity_tokens(group, variants, ids, others, output)
                prescanned = {}
            if output.spooled:
                report = verify_entries(
                    output.entries, output.files_in_memory, tokens, prescanned=prescanned
                )
            else:
                report = verify_tree(tree, tokens, executor=self.executor, prescanned=prescanned)
            details.update(files=report.files_scanned)
            try:
                require_clean(report)
            except QuarantineError as exc:
                output.remove()
                exc.files = [str(Path(o.source).relative_to(unpacked)) for o in output.outcomes]
                raise

        self._record_studies(pseudonym, output, job_id)
        stem = f"{pseudonym}_{job_id}" + (f"_{index + 1}" if index else "")
        delivered_as = stem
        if self.settings.delivery.network_targets:
            # Verified bytes, kept for the network targets; the daemon's delivery worker sends
            # them and records each instance per target.
            with self._stage(job_id, "stage_out", group=index):
                self._stage_outgoing(job_id, stem, output)
        if self.settings.delivery.to_outbox:
            with self._stage(job_id, "pack", group=index):
                archive = self._deliver(output, stem)
            result.archive = archive.name
            delivered_as = archive.name
        result.instances = output.files
        for source, entry in sorted(output.layout.items()):
            relative = str(Path(source).relative_to(unpacked))
            result.add_rows([relative], "delivered", "", f"{delivered_as}/{entry}")
        with self._stage(job_id, "deliver", group=index):
            output.remove()
            log.info("job %s: delivered %d instances as %s", job_id, output.files, pseudonym)

    def _screen(self, group: PatientGroup) -> tuple[list[Path], dict[str, tuple[str, ...]]]:
        """Split the group by the verdicts taken while its headers were read.

        A group without one verdict per file fails here (strict zip) and is quarantined: no
        file goes on unscreened.
        """
        passed: list[Path] = []
        rejected: dict[str, list[str]] = {}
        for relative, verdict in zip(group.files, group.verdicts, strict=True):
            if verdict is None:
                passed.append(relative)
            else:
                rejected.setdefault(verdict.code, []).append(str(relative))
        return passed, {code: tuple(files) for code, files in rejected.items()}

    def _linked_accession(self, group: PatientGroup, files: list[Path]) -> str | None:
        """With accession links on, the serial that replaces the group's accession number."""
        if not self.settings.registry.accession_links:
            return None
        accessions = {a for a in group.accession_numbers if a}
        serials = {a: self.registry.accession_serial(a) for a in accessions}
        missing = [a for a, s in serials.items() if s is None]
        if not accessions or missing or len(set(serials.values())) != 1:
            raise QuarantineError(
                "link.missing",
                "no accession link (or more than one) for this patient's study; import it with "
                "'dicomdrop registry import-links'",
                stage="match",
                files=[str(p) for p in files],
            )
        return next(iter(serials.values()))

    def _identity_tokens(
        self,
        group: PatientGroup,
        variants: set[str],
        ids: set[str],
        others: Sequence[PatientGroup],
        output: GroupOutput | None = None,
    ) -> IdentityTokens:
        """The patient's identity tokens: names, IDs, accession numbers, birth date and, unless
        the profile keeps UIDs, the original study, series and SOP instance UIDs of every file of
        the group (from its headers, plus those the engine reported for ``output``); and the
        names and IDs of the ``others`` patients of the drop."""
        accessions = set(group.accession_numbers)
        uids = set(group.original_uids)
        if output is not None:
            accessions.update(o.original_accession for o in output.outcomes)
            uids.update(output.original_uids)
        accessions.discard("")
        uids.discard("")
        births = {group.birth_date} if group.birth_date else set()
        return build_identity_tokens(
            names=sorted(v for v in variants if v),
            patient_ids=sorted(i for i in ids if i),
            accession_numbers=sorted(accessions),
            birth_dates=sorted(births),
            uids=() if self.settings.deid.retain_uids else sorted(uids),
            other_names=sorted(
                {n for g in others for n in (g.patient_name, *g.other_patient_names) if n}
            ),
            other_patient_ids=sorted(
                {i for g in others for i in (g.patient_id, *g.other_patient_ids) if i}
            ),
        )

    def _tokens_cover(self, group: PatientGroup, output: GroupOutput) -> bool:
        """True when the group's headers gave every original UID and accession number that the
        engine reported for ``output`` (so the tokens built from them cover the outputs)."""
        accessions = {o.original_accession for o in output.outcomes} - {""}
        if not accessions <= set(group.accession_numbers):
            return False
        return bool(self.settings.deid.retain_uids) or output.original_uids <= set(
            group.original_uids
        )

    def _record_studies(self, pseudonym: str, output: GroupOutput, job_id: str) -> None:
        seen: set[str] = set()
        for o in output.outcomes:
            if o.original_study_uid in seen:
                continue
            seen.add(o.original_study_uid)
            self.registry.record_study(
                pseudonym,
                original_study_uid=o.original_study_uid,
                new_study_uid=o.new_study_uid,
                original_accession=o.original_accession or None,
                new_accession=o.new_accession or None,
                study_date=o.study_date,
                shifted_date=o.shifted_study_date,
                job_id=job_id,
            )

    def _stage_outgoing(self, job_id: str, stem: str, output: GroupOutput) -> None:
        """Keep the verified instances for the network targets and record them as pending."""
        root = outgoing_root(self.settings)
        items = stage_outgoing(root, job_id, stem, _verified_instances(output))
        targets = [t.name for t in self.settings.delivery.network_targets]
        DeliveryLedger(self.store).add(job_id, targets, items)

    def _deliver(self, output: GroupOutput, stem: str) -> Path:
        """Pack the outputs into the outbox atomically; an existing final archive means done."""
        outbox = self.settings.paths.outbox
        suffix = {"zip": ".zip", "7z": ".7z", "folder": ""}[self.settings.archives.output_format]
        final = outbox / f"{stem}{suffix}"
        # A crash while packing leaves a staging file: remove this archive's leftovers.
        for stale in (outbox / INCOMING_DIR).glob(f"{stem}{suffix}.*.part"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        if final.exists():
            return final
        if output.spooled:
            return pack_spooled(
                output.entries, output.files_in_memory, outbox, stem, self.settings.archives
            )
        return pack_tree(output.tree, outbox, stem, self.settings.archives)

    # --- quarantine and the end of a job ------------------------------------------------------

    def _quarantine_group(
        self,
        job_id: str,
        group: PatientGroup,
        unpacked: Path,
        exc: QuarantineError,
        result: GroupResult,
    ) -> None:
        """Quarantine the files ``exc`` names (else every file of the group not yet reported)
        and record that in ``result``, keeping what the group decided before."""
        reported = result.reported
        named = exc.files or [str(p) for p in group.files]
        files = tuple(f for f in named if f not in reported)
        self.quarantine.put_files(
            job_id, QuarantineEntry(exc.code, exc.stage or "pipeline", exc.message, files), unpacked
        )
        state = "waiting" if exc.code == "match.ambiguous" else "quarantined"
        result.outcome = state
        result.archive = None
        result.instances = 0
        result.quarantined[exc.code] = result.quarantined.get(exc.code, 0) + len(files)
        result.add_rows(files, state, exc.code)
        log.warning("job %s: group quarantined (%s)", job_id, exc.code)

    def _quarantine_drop(self, job_id: str, drop: Path, exc: QuarantineError) -> None:
        self.quarantine.put_drop(
            job_id, QuarantineEntry(exc.code, exc.stage or "unpack", exc.message, ()), drop
        )
        log.warning("job %s: drop quarantined (%s)", job_id, exc.code)

    def _finish(
        self, job_id: str, folder: Path, outcome: JobOutcome, *, keep_original: bool
    ) -> None:
        drop_root = folder / "drop"
        if keep_original and drop_root.exists():
            target = self.settings.paths.originals / job_id
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(drop_root, target)
                os.utime(target)  # retention counts from delivery, not from the drop's age
        write_json_atomic(folder / "outcome.json", _outcome_json(outcome))
        _write_report(folder / REPORT_FILE, outcome)
        self.jobs.set_state(
            job_id,
            outcome.state,
            error_code=next(iter(outcome.quarantined), None),
            message=_summary_line(outcome),
        )
        # The outcome is also kept next to the originals: the work folder goes away.
        if keep_original:
            for name in ("outcome.json", REPORT_FILE):
                with contextlib.suppress(OSError):
                    shutil.copy2(folder / name, self.settings.paths.originals / job_id)
        shutil.rmtree(folder, ignore_errors=True)
        log.info("job %s: %s", job_id, _summary_line(outcome))

    def _load_outcome(self, job_id: str, state: str) -> JobOutcome:
        path = self.settings.paths.originals / job_id / "outcome.json"
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            return JobOutcome(
                job_id=job_id,
                state=state,
                groups=[GroupResult(**g) for g in data.get("groups", [])],
                deleted=data.get("deleted", {}),
                quarantined=data.get("quarantined", {}),
            )
        return JobOutcome(job_id=job_id, state=state)

    def _drop_path(self, folder: Path, job_id: str) -> Path | None:
        """The claimed drop; after a crash in ``_finish`` it may already sit in originals or
        in quarantine (moved there before the job's final state was recorded)."""
        for place in (
            folder / "drop",
            self.settings.paths.originals / job_id,
            self.quarantine.folder(job_id) / "drop",
        ):
            entries = (
                [p for p in place.iterdir() if p.name not in ("outcome.json", REPORT_FILE)]
                if place.is_dir()
                else []
            )
            if len(entries) == 1:
                return entries[0]
        return None

    def _check_free_space(self, drop: Path) -> None:
        margin = self.settings.archives.free_space_margin_bytes
        free = shutil.disk_usage(self.settings.paths.work).free
        if free < margin:
            raise OSError(errno.ENOSPC, "not enough free space in the work folder")

    @contextlib.contextmanager
    def _stage(
        self, job_id: str, stage: str, *, group: int | None = None
    ) -> Iterator[dict[str, Any]]:
        details: dict[str, Any] = {} if group is None else {"group": group}
        self.jobs.stage_started(job_id, stage)
        started = time.monotonic()
        yield details
        elapsed = time.monotonic() - started
        details["seconds"] = round(elapsed, 3)
        self.jobs.stage_finished(job_id, stage, details=details)
        if self._on_stage is not None:
            self._on_stage(job_id, stage, elapsed)


_SCREEN_MESSAGES = {
    "screen.unreadable": "instances whose DICOM header cannot be read",
    "screen.burned_in": "instances with burned-in annotation",
    "screen.screen_capture": "screen captures (ImageType or SeriesDescription SAVE)",
    "screen.patient_protocol": "patient protocol series",
    "screen.sop_class": "SOP classes that are not delivered (e.g. Secondary Capture)",
    "screen.suspect_manufacturer": "instances from a suspect manufacturer or model",
    "screen.modality": "modality missing or not in the allowed list",
    "screen.duplicate_uid": "instances that share their SOPInstanceUID with a different instance",
}


def split_duplicates(
    group: PatientGroup, passed: list[Path], unpacked: Path
) -> tuple[list[Path], list[Path], list[Path]]:
    """Split screened files into (kept, duplicates, conflicting) by SOPInstanceUID.

    Files that are byte-identical copies of another with the same UID are duplicates: the first
    (in path order) is kept, the copies are not delivered. Files sharing a UID with different
    bytes cannot all be the instance the UID names, and a receiver would keep only one: all
    of them are conflicting (quarantined for a person to decide). Files without a UID are kept.
    """
    if len(group.sop_uids) != len(group.files):  # a group made without headers: nothing to compare
        return passed, [], []
    uid_of = dict(zip(group.files, group.sop_uids, strict=True))
    by_uid: dict[str, list[Path]] = {}
    for relative in passed:
        uid = uid_of.get(relative, "")
        if uid:
            by_uid.setdefault(uid, []).append(relative)
    duplicates: set[Path] = set()
    conflicting: set[Path] = set()
    for files in by_uid.values():
        if len(files) < 2:
            continue
        digests = {_digest(unpacked / relative) for relative in files}
        if len(digests) == 1:
            duplicates.update(sorted(files)[1:])
        else:
            conflicting.update(files)
    kept = [p for p in passed if p not in duplicates and p not in conflicting]
    return kept, sorted(duplicates), sorted(conflicting)


def _verified_instances(output: GroupOutput) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every verified instance of ``output``, as verification read them."""
    if output.spooled:
        for name, entry in output.entries:
            if name.endswith(".dcm"):
                yield name, read_spooled(entry)
        return
    for path in sorted(output.tree.rglob("*.dcm")):
        if path.is_file():
            yield path.relative_to(output.tree).as_posix(), path.read_bytes()


def _digest(path: Path) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _internal(exc: BaseException) -> QuarantineError:
    return QuarantineError("internal", f"unexpected {type(exc).__name__}; see the daemon log")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_report(path: Path, outcome: JobOutcome) -> None:
    """One CSV row per file of the drop: where it went (delivered, quarantined, deleted) and
    why. It names the files as they were in the drop, so it lives with the originals."""
    rows = sorted(
        [*outcome.report, *(row for g in outcome.groups for row in g.report)],
        key=lambda row: row[0],
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "outcome", "code", "delivered_as"])
    writer.writerows(rows)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(buffer.getvalue(), encoding="utf-8")
    temporary.replace(path)


def _outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    return {
        "job": outcome.job_id,
        "state": outcome.state,
        "groups": [{k: v for k, v in g.__dict__.items() if k != "report"} for g in outcome.groups],
        "deleted": outcome.deleted,
        "quarantined": outcome.quarantined,
    }


def _summary_line(outcome: JobOutcome) -> str:
    delivered = outcome.delivered
    parts = [
        f"{len(delivered)} patient(s) delivered ({sum(g.instances for g in delivered)} instances)"
    ]
    if outcome.quarantined:
        parts.append(
            "quarantined: " + ", ".join(f"{c}={n}" for c, n in sorted(outcome.quarantined.items()))
        )
    if outcome.deleted:
        parts.append(
            "deleted: " + ", ".join(f"{t}={n}" for t, n in sorted(outcome.deleted.items()))
        )
    return "; ".join(parts)


def purge_originals(settings: Settings, *, now: datetime | None = None) -> int:
    """Delete originals older than ``retention_days``; returns how many jobs were removed."""
    root = settings.paths.originals
    if not root.is_dir():
        return 0
    limit = (now or datetime.now(UTC)) - timedelta(days=settings.delivery.retention_days)
    removed = 0
    for child in root.iterdir():
        mtime = datetime.fromtimestamp(child.stat().st_mtime, UTC)
        if mtime <= limit:
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed


def run_job(config_path: Path, job_id: str) -> str:
    """Run one claimed job in this process (the daemon's worker entry point); its final state."""
    settings = load_settings(config_path)
    store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
    pipeline = Pipeline(
        settings, load_key(settings.security.key_file), store, on_stage=_observe_stage
    )
    try:
        before = pipeline.jobs.get(job_id)
        outcome = pipeline.run(job_id)
        if before is None or before.state not in FINAL_STATES:
            _count_outcome(outcome)
        return outcome.state
    finally:
        pipeline.close()
        store.close()


def _observe_stage(job_id: str, stage: str, seconds: float) -> None:
    metrics.observe("dicomdrop_stage_duration_seconds", seconds, stage=stage)


def _count_outcome(outcome: JobOutcome) -> None:
    """Report a job's quarantines and files to the daemon's metrics (no-op outside a worker)."""
    for code in outcome.quarantined:
        metrics.count("dicomdrop_quarantines_total", code=code)
    counts = {
        "delivered": sum(g.instances for g in outcome.delivered),
        "quarantined": sum(outcome.quarantined.values()),
        "deleted": sum(outcome.deleted.values()),
    }
    for kind, n in counts.items():
        if n:
            metrics.count("dicomdrop_files_total", n, outcome=kind)


def process_job(config_path: Path, job_id: str) -> JobOutcome:
    """Run one claimed job in this process with per-file work in-process; its outcome.

    ``dicomdrop process`` runs several drops in parallel through this function, one job per
    worker process, so that every stage (not only de-identification) uses all cores. A worker
    keeps its settings, key and database connection from one job to the next.
    """
    return _job_runner(config_path).run(job_id)


_runners: dict[Path, Pipeline] = {}


def _job_runner(config_path: Path) -> Pipeline:
    """This process's pipeline for ``config_path``, made on first use and closed at exit."""
    pipeline = _runners.get(config_path)
    if pipeline is None:
        settings = load_settings(config_path)
        store = Store.open(settings.store_url, busy_timeout_ms=settings.store.busy_timeout_ms)
        pipeline = Pipeline(settings, load_key(settings.security.key_file), store)
        _runners[config_path] = pipeline
        if len(_runners) == 1:
            atexit.register(_close_runners)
    return pipeline


def _close_runners() -> None:
    for pipeline in _runners.values():
        pipeline.close()
        pipeline.store.close()
    _runners.clear()
