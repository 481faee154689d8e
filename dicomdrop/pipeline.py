"""The pipeline: moves one claimed job through the stages. The only place that knows the order.

Job stages: unpack -> sort -> group; then for each group: screen (+ duplicates) -> match; then
the groups matched to one pseudonym are merged (one delivery per patient, one numbering of its
studies), and for each patient: deid -> verify -> deliver; finally the originals are kept.
Each stage lives in its own module under ``dicomdrop/stages/``; this module orders them, records
their boundaries in the store, and quarantines what a stage refuses.

State and resumption. A job lives in ``work/<job>/``; the claimed drop stays untouched in
``work/<job>/drop/`` until the job is finished. Job-level stages are cheap to redo, so a resumed
job rolls them back to the claimed drop and redoes them (unpacking is deterministic). A patient
group is finished when its output was published by its deliverer (atomic) or its files were
moved to quarantine; that outcome is written to ``work/<job>/state/`` (one marker per patient,
naming every group merged into it) and to the store, and a resumed job skips finished groups.
The deliverer's proof of delivery (for the outbox: the output exists under its final name) stops
a second delivery even if the process died before recording it. Nothing is delivered except
after ``verify`` found no trace of the patient.

Running jobs (claiming by copy, worker processes, metrics) is ``dicomdrop.runner``'s business.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy.exc

from dicomdrop.archives import unpack_drop
from dicomdrop.archives.members import UnpackedFiles
from dicomdrop.attempts import begin_attempt, forgive_attempt, last_failure, note_failure
from dicomdrop.config import Settings
from dicomdrop.deid.profile import compile_profile
from dicomdrop.delivery import deliverer_for
from dicomdrop.errors import QuarantineError, StoreError
from dicomdrop.fsutil import discard_tree, write_json_atomic
from dicomdrop.job_progress import FileProgress, ProgressCallback
from dicomdrop.jobs import (
    KEPT_NAMES,
    GroupOutcome,
    JobOutcome,
    JobState,
    keep_outcome,
    read_outcome,
    write_outcome,
)
from dicomdrop.quarantine import PixelRegion, Quarantine, QuarantineEntry
from dicomdrop.resources import resource_code
from dicomdrop.stages.deidentify import deidentify_group, make_executor
from dicomdrop.stages.deliver import deliver
from dicomdrop.stages.duplicates import split_duplicates
from dicomdrop.stages.group import PatientGroup, group_instances, merge_groups
from dicomdrop.stages.match import PatientMatch, match_group, merge_matches, record_studies
from dicomdrop.stages.screen import SCREEN_MESSAGES, split_verdicts
from dicomdrop.stages.sort import dicom_by_head, sort_tree
from dicomdrop.stages.verify import identity_tokens, kept_on_purpose, verify_output
from dicomdrop.store.db import Store
from dicomdrop.store.jobs import JobStore
from dicomdrop.store.registry import Registry

log = logging.getLogger(__name__)

#: ``on_stage(job_id, stage, seconds)`` is called after each stage.
StageCallback = Callable[[str, str, float], None]
_T = TypeVar("_T")


def job_dir(settings: Settings, job_id: str) -> Path:
    """The work folder of a job."""
    return settings.paths.work / job_id


class Pipeline:
    """Runs claimed jobs to a final state. One instance per process."""

    def __init__(
        self,
        settings: Settings,
        key: bytes,
        store: Store,
        *,
        file_workers: int = 1,
        executor: Executor | None = None,
        on_stage: StageCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.settings = settings
        self.key = key
        self.store = store
        self.jobs = JobStore(store)
        self.registry = Registry(store, key, settings.registry)
        self.quarantine = Quarantine(settings.paths.quarantine)
        self.deliverer = deliverer_for(settings, store)
        self.file_workers = file_workers
        self._executor: Executor | None = None
        self._given_executor = executor  # someone else's (work sharing): used, never shut down
        self._on_stage = on_stage
        self._on_progress = on_progress
        # The files of each running job's unpacked drop, some left in the claimed drop.
        self._unpacked: dict[str, UnpackedFiles] = {}

    def close(self) -> None:
        """Stop the per-file worker pool, if any."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    @property
    def executor(self) -> Executor | None:
        """The per-file executor: the one given, or a worker pool created on first use."""
        if self._given_executor is not None:
            return self._given_executor
        if self._executor is None and self.file_workers > 1:
            self._executor = make_executor(self.file_workers)
        return self._executor

    # --- the job loop --------------------------------------------------------------------------

    def run(self, job_id: str) -> JobOutcome:
        """Run (or resume) one job to its final state and return what happened.

        Operational failures (store unreachable, disk full) propagate and leave the job
        unfinished, to be resumed; anything else about the data ends in quarantine. A job
        started ``max_job_attempts`` times without finishing is quarantined as ``internal``.
        """
        folder = job_dir(self.settings, job_id)
        record = self.jobs.get(job_id)
        if record is None or JobState(record.state).at_rest or not folder.is_dir():
            return self._run_attempt(job_id)
        before = begin_attempt(folder)
        if before >= self.settings.daemon.max_job_attempts:
            return self._give_up(job_id, folder, before)
        try:
            return self._run_attempt(job_id)
        except Exception as exc:
            if resource_code(exc):
                forgive_attempt(folder)
            elif folder.is_dir():
                note_failure(folder, exc)
            raise
        finally:
            self._unpacked.pop(job_id, None)

    def _give_up(self, job_id: str, folder: Path, attempts: int) -> JobOutcome:
        """Quarantine the whole drop as ``internal``: it failed ``attempts`` times."""
        last = last_failure(folder) or "an unknown error"
        exc = QuarantineError(
            "internal",
            f"the job did not finish in {attempts} attempts (last: {last}); see the daemon log",
            stage="pipeline",
        )
        outcome = JobOutcome(job_id=job_id, state=JobState.QUARANTINED, quarantined={"internal": 1})
        drop = self._drop_path(folder, job_id)
        if drop is not None:
            self._quarantine_drop(job_id, drop, exc)
            outcome.report = [[drop.name, JobState.QUARANTINED, "internal", ""]]
        self._finish(job_id, folder, outcome, keep_original=False)
        return outcome

    def _run_attempt(self, job_id: str) -> JobOutcome:
        record = self.jobs.get(job_id)
        if record is None:
            raise StoreError(f"job {job_id} is not in the store")
        if JobState(record.state).at_rest:
            return read_outcome(self.settings.paths.originals / job_id, job_id, record.state)
        folder = job_dir(self.settings, job_id)
        drop = self._drop_path(folder, job_id)
        if drop is None:
            message = "the claimed drop is gone from work, originals and quarantine"
            self.jobs.set_state(
                job_id, JobState.FAILED, error_code="job.drop_missing", message=message
            )
            log.error("job %s: %s", job_id, message)
            return JobOutcome(job_id=job_id, state=JobState.FAILED)
        self.jobs.set_state(job_id, JobState.RUNNING)
        outcome = JobOutcome(job_id=job_id, state=JobState.RUNNING)
        log.info("job %s: started", job_id)
        try:
            groups = self._prepare(job_id, folder, drop, outcome)
        except QuarantineError as exc:
            self._quarantine_drop(job_id, drop, exc)
            outcome.state = JobState.QUARANTINED
            outcome.quarantined[exc.code] = outcome.quarantined.get(exc.code, 0) + 1
            outcome.report = [[drop.name, JobState.QUARANTINED, exc.code, ""]]
            self._finish(job_id, folder, outcome, keep_original=False)
            return outcome
        outcome.groups = self._run_groups(job_id, folder, groups)
        for g in outcome.groups:
            for code, n in g.quarantined.items():
                outcome.quarantined[code] = outcome.quarantined.get(code, 0) + n
            if g.duplicates:
                outcome.deleted["duplicate"] = outcome.deleted.get("duplicate", 0) + g.duplicates
        if any(g.outcome == JobState.WAITING for g in outcome.groups):
            outcome.state = JobState.WAITING
        elif outcome.quarantined:
            outcome.state = JobState.QUARANTINED
        else:
            outcome.state = JobState.DELIVERED
        self._finish(job_id, folder, outcome, keep_original=True)
        return outcome

    def _prepare(
        self, job_id: str, folder: Path, drop: Path, outcome: JobOutcome
    ) -> list[PatientGroup]:
        """Unpack, sort and group: redone from the claimed drop on every (re)start."""
        unpacked = folder / "unpacked"
        rejected = folder / "rejected"
        with self._stage(job_id, "unpack"):
            for leftover in (unpacked, rejected):
                if leftover.exists():
                    shutil.rmtree(leftover)
            self._check_free_space(drop)
            unpacked_report = unpack_drop(
                drop,
                unpacked,
                self.settings.archives,
                rejected_dir=rejected,
                executor=self.executor,
                # DICOM files are read from the claimed drop, not written (archives.members).
                leave_in_drop=dicom_by_head,
            )
            files = UnpackedFiles(
                unpacked, {Path(p): m for p, m in unpacked_report.in_drop.items()}
            )
            self._unpacked[job_id] = files
            # A damaged archive inside the drop goes to quarantine alone; the rest goes on.
            for member in unpacked_report.rejected:
                entry = QuarantineEntry(member.code, "unpack", member.message, (member.path,))
                self.quarantine.put_files(job_id, entry, rejected)
                outcome.quarantined[member.code] = outcome.quarantined.get(member.code, 0) + 1
                outcome.report.append([member.path, "quarantined", member.code, ""])
        with self._stage(job_id, "sort") as details:
            sorted_files = sort_tree(unpacked, self.settings.sort, files.in_drop)
            outcome.deleted = dict(sorted_files.deleted)
            outcome.report += [
                [str(f), "deleted", kind, ""] for f, kind in sorted_files.deleted_files
            ]
            details.update(deleted=dict(sorted_files.deleted), dicom=len(sorted_files.dicom))
            if sorted_files.unknown:
                unknown = [str(p) for p in sorted_files.unknown]
                self._quarantine_files(
                    job_id,
                    QuarantineEntry(
                        "sort.unknown_file",
                        "sort",
                        "files that are neither DICOM nor a known deletable type",
                        tuple(unknown),
                    ),
                    unpacked,
                    outcome.quarantined,
                    outcome.report,
                )
        with self._stage(job_id, "group") as details:
            grouped = group_instances(
                unpacked,
                sorted_files.dicom,
                self.settings.screen,
                executor=self.executor,
                in_drop=files.in_drop,
            )
            if grouped.unreadable:
                self._quarantine_files(
                    job_id,
                    QuarantineEntry(
                        "dicom.unreadable",
                        "group",
                        "DICOM files whose header cannot be read",
                        tuple(str(p) for p in grouped.unreadable),
                    ),
                    unpacked,
                    outcome.quarantined,
                    outcome.report,
                )
            details.update(groups=len(grouped.groups))
        if not grouped.groups and not outcome.quarantined and not outcome.deleted:
            raise QuarantineError("drop.empty", "the drop holds no files", stage="sort")
        return sorted(grouped.groups, key=lambda g: g.key)

    # --- one patient group ---------------------------------------------------------------------

    def _run_groups(
        self, job_id: str, folder: Path, groups: Sequence[PatientGroup]
    ) -> list[GroupOutcome]:
        """Screen and match every group, merge the groups matched to one patient, then
        de-identify, verify and deliver each patient once; groups finished before (a marker in
        ``work/<job>/state/`` covers them) are skipped. One outcome per patient, in group order.
        """
        finished = _finished_groups(folder / "state")
        outcomes: dict[int, GroupOutcome] = {}
        matched: list[_Matched] = []
        for index, group in enumerate(groups):
            done = finished.get(group.key)
            if done is not None:
                if done.key == group.key:
                    outcomes[index] = done
                continue
            result = GroupOutcome(key=group.key, outcome=JobState.DELIVERED)
            step = partial(self._screen_and_match, job_id, folder, group, index, result)
            found = self._guarded(job_id, folder, group, index, result, step)
            if found is None:  # finished here: nothing passed, or quarantined, or waiting
                self._mark_finished(folder, index, result)
                outcomes[index] = result
            else:
                matched.append(_Matched(index, group, *found, result))
        for patient in _by_patient(matched):
            members = [m.group for m in patient]
            group = merge_groups(members)
            result = _merged_outcome([m.result for m in patient])
            keys = {g.key for g in members}
            others = [g for g in groups if g.key not in keys]
            index = patient[0].index
            deliver_step = partial(
                self._deliver_patient, job_id, folder, patient, group, result, others
            )
            self._guarded(job_id, folder, group, index, result, deliver_step)
            self._mark_finished(folder, index, result)
            outcomes[index] = result
        return [outcomes[i] for i in sorted(outcomes)]

    def _guarded(
        self,
        job_id: str,
        folder: Path,
        group: PatientGroup,
        index: int,
        result: GroupOutcome,
        step: Callable[[], _T],
    ) -> _T | None:
        """``step()``, or None after quarantining the files of ``group`` not yet reported when
        it raised a QuarantineError or failed on the data. Operational failures (and a dead
        worker process) propagate."""
        unpacked = folder / "unpacked"
        try:
            return step()
        except (StoreError, sqlalchemy.exc.OperationalError):
            raise
        except BrokenExecutor:
            # A worker process died (killed, out of memory): nothing is known about the data.
            # The job stays unfinished; a file that kills its worker every time uses up the
            # job's attempts and is quarantined as ``internal`` then.
            raise
        except OSError as exc:
            if resource_code(exc):
                raise  # never a verdict on the data: the job pauses
            self._quarantine_group(job_id, group, unpacked, _internal(exc), result)
        except QuarantineError as exc:
            self._quarantine_group(job_id, group, unpacked, exc, result)
        except Exception as exc:
            if resource_code(exc):
                raise
            log.exception("job %s: group %d failed", job_id, index)
            self._quarantine_group(job_id, group, unpacked, _internal(exc), result)
        return None

    @staticmethod
    def _mark_finished(folder: Path, index: int, result: GroupOutcome) -> None:
        """Record a finished patient (one marker for all the groups merged into it)."""
        marker = folder / "state" / f"group-{index}.json"
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, result.__dict__)

    def _screen_and_match(
        self, job_id: str, folder: Path, group: PatientGroup, index: int, result: GroupOutcome
    ) -> tuple[list[Path], PatientMatch] | None:
        """Screen one group and match its patient, recording into ``result``: the files that
        go on and the match, or None when no file passed screening. A QuarantineError for the
        files not yet reported is raised to the caller."""
        unpacked = folder / "unpacked"
        with self._stage(job_id, "screen", group=index) as details:
            passed, screened = split_verdicts(group.files, group.verdicts)
            passed, duplicates, conflicting = split_duplicates(
                group.files, group.sop_uids, passed, self._files(job_id, unpacked)
            )
            self._hold_back(job_id, unpacked, result, screened, duplicates, conflicting)
            details.update(
                passed=len(passed),
                screened=sum(len(f) for f in screened.values()),
                duplicates=len(duplicates),
            )
        if not passed:
            result.outcome = JobState.QUARANTINED
            return None
        with self._stage(job_id, "match", group=index):
            match = match_group(
                self.registry,
                group,
                passed,
                job_id,
                accession_links=self.settings.registry.accession_links,
            )
            result.pseudonym = match.pseudonym
        return passed, match

    def _hold_back(
        self,
        job_id: str,
        unpacked: Path,
        result: GroupOutcome,
        screened: dict[str, tuple[str, ...]],
        duplicates: Sequence[Path],
        conflicting: Sequence[Path],
    ) -> None:
        """Report duplicates as deleted and quarantine the screened and conflicting files."""
        if conflicting:
            screened["screen.duplicate_uid"] = tuple(str(p) for p in conflicting)
        result.duplicates += len(duplicates)
        result.add_rows(map(str, duplicates), "deleted", "duplicate")
        for code, files in screened.items():
            entry = QuarantineEntry(code, "screen", SCREEN_MESSAGES.get(code, code), files)
            self._quarantine_files(job_id, entry, unpacked, result.quarantined, result.report)

    def _deliver_patient(
        self,
        job_id: str,
        folder: Path,
        patient: Sequence[_Matched],
        group: PatientGroup,
        result: GroupOutcome,
        others: Sequence[PatientGroup],
    ) -> None:
        """De-identify, verify and deliver one patient (``group``: the ``patient`` groups merged),
        recording into ``result``; a QuarantineError for the files not yet reported is raised
        to the caller."""
        unpacked = folder / "unpacked"
        index = patient[0].index
        kept = kept_on_purpose(compile_profile(self.settings.deid))
        passed = [p for m in patient for p in m.passed]
        match = patient[0].match
        if len(patient) > 1:
            with self._stage(job_id, "merge", group=index) as details:
                # The groups' files met only now: the same instance may be in two of them.
                passed, duplicates, conflicting = split_duplicates(
                    group.files, group.sop_uids, passed, self._files(job_id, unpacked)
                )
                self._hold_back(job_id, unpacked, result, {}, duplicates, conflicting)
                details.update(groups=len(patient), passed=len(passed))
                match = merge_matches([m.match for m in patient], passed)

        variants, ids = match.name_variants, match.patient_ids
        # Built before de-identification: each output is scanned as it is produced.
        tokens = identity_tokens(group, variants, ids, others, kept=kept)
        tree = folder / "out" / f"group-{index}"
        files = self._files(job_id, unpacked)
        with self._stage(job_id, "deid", group=index) as details:
            output = deidentify_group(
                sources=[unpacked / p for p in passed],
                members=[files.member(p) for p in passed],
                tree=tree,
                pseudonym=match.pseudonym,
                key=self.key,
                settings=self.settings.deid,
                name_variants=sorted(variants),
                patient_ids=sorted(ids),
                accession_number=match.accession,
                executor=self.executor,
                manifest={"job": job_id, "profile": self.settings.deid.profile},
                tokens=tokens,
                zip_entries=(self.settings.archives if self.deliverer.spools_zip_entries else None),
                pixels=self.settings.pixels,
                on_file=FileProgress(self.jobs, job_id, "deid", self._on_progress),
            )
            failed = tuple(str(Path(o.source).relative_to(unpacked)) for o in output.failed)
            if failed:
                codes = Counter(o.error_code or "deid.failed" for o in output.failed)
                for code in codes:
                    self._put_files(
                        job_id,
                        QuarantineEntry(
                            code,
                            "screen" if code.startswith("screen.") else "deid",
                            _FILE_MESSAGES.get(
                                code, "instances the de-identification engine could not process"
                            ),
                            tuple(
                                f
                                for o, f in zip(output.failed, failed, strict=True)
                                if (o.error_code or "deid.failed") == code
                            ),
                            regions=tuple(
                                PixelRegion(f, frame, (left, top, width, height))
                                for o, f in zip(output.failed, failed, strict=True)
                                if (o.error_code or "deid.failed") == code
                                for frame, left, top, width, height in o.text_regions
                            ),
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
            result.outcome = JobState.QUARANTINED
            return

        with self._stage(job_id, "verify", group=index) as details:
            report = verify_output(
                group,
                output,
                tokens,
                variants=variants,
                ids=ids,
                others=others,
                kept=kept,
                unpacked=unpacked,
                executor=self.executor,
            )
            details.update(files=report.files_scanned)

        record_studies(self.registry, match.pseudonym, output, job_id)
        with self._stage(job_id, "pack", group=index):
            # One delivery per patient and job (the groups of one pseudonym were merged), so the
            # name is unique in the job and the same when a resumed job redoes it, which lets
            # the deliverer's proof of delivery stop a second delivery.
            stem = f"{match.pseudonym}_{job_id}"
            delivered_as = deliver(self.deliverer, output, stem)
        result.archive = delivered_as
        result.instances = output.files
        for source, output_path in sorted(output.layout.items()):
            relative = str(Path(source).relative_to(unpacked))
            result.add_rows([relative], "delivered", "", f"{delivered_as}/{output_path}")
        with self._stage(job_id, "deliver", group=index):
            output.remove()
            log.info("job %s: delivered %d instances as %s", job_id, output.files, match.pseudonym)

    # --- quarantine and the end of a job ------------------------------------------------------

    def _files(self, job_id: str, unpacked: Path) -> UnpackedFiles:
        """The files of the job's unpacked drop (those left in the claimed drop included)."""
        files = self._unpacked.get(job_id)
        return files if files is not None and files.root == unpacked else UnpackedFiles(unpacked)

    def _put_files(self, job_id: str, entry: QuarantineEntry, unpacked: Path) -> None:
        """Move ``entry.files`` (relative to ``unpacked``) into quarantine, writing out first
        those that are still in the claimed drop: every file named there is moved."""
        self._files(job_id, unpacked).write_out(entry.files)
        self.quarantine.put_files(job_id, entry, unpacked)

    def _quarantine_files(
        self,
        job_id: str,
        entry: QuarantineEntry,
        unpacked: Path,
        counts: dict[str, int],
        report: list[list[str]],
    ) -> None:
        """Quarantine ``entry.files`` and count and report them under ``entry.code``."""
        self._put_files(job_id, entry, unpacked)
        counts[entry.code] = counts.get(entry.code, 0) + len(entry.files)
        report += [[f, "quarantined", entry.code, ""] for f in entry.files]

    def _quarantine_group(
        self,
        job_id: str,
        group: PatientGroup,
        unpacked: Path,
        exc: QuarantineError,
        result: GroupOutcome,
    ) -> None:
        """Quarantine the files ``exc`` names (else every file of the group not yet reported)
        and record that in ``result``, keeping what the group decided before."""
        reported = result.reported
        named = exc.files or [str(p) for p in group.files]
        files = tuple(f for f in named if f not in reported)
        entry = QuarantineEntry(
            exc.code, exc.stage or "pipeline", exc.message, files, exc.pending_match
        )
        self._put_files(job_id, entry, unpacked)
        state = JobState.WAITING if exc.code == "match.ambiguous" else JobState.QUARANTINED
        result.outcome = state
        result.archive = None
        result.instances = 0
        result.quarantined[exc.code] = result.quarantined.get(exc.code, 0) + len(files)
        result.add_rows(files, state, exc.code)
        log.warning("job %s: group quarantined (%s)", job_id, exc.code)

    def _quarantine_drop(self, job_id: str, drop: Path, exc: QuarantineError) -> None:
        self.quarantine.put_drop(
            job_id,
            QuarantineEntry(exc.code, exc.stage or "unpack", exc.message, tuple(exc.files)),
            drop,
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
        write_outcome(folder, outcome)
        kept = self.settings.paths.originals / job_id
        if keep_original and kept.is_dir():
            # The outcome is also kept next to the originals, since the work folder goes away;
            # before the end state is recorded, because a restart that finds the job at rest
            # removes its work folder.
            keep_outcome(folder, kept)
        summary = outcome.summary_line()
        self.jobs.set_state(
            job_id,
            outcome.state,
            error_code=next(iter(outcome.quarantined), None),
            message=summary,
        )
        discard_tree(folder)  # a kill halfway leaves a .discard- folder, swept at start
        log.info("job %s: %s", job_id, summary)

    def _drop_path(self, folder: Path, job_id: str) -> Path | None:
        """The claimed drop; after a crash in ``_finish`` it may already sit in originals or
        in quarantine (moved there before the job's final state was recorded)."""
        for place in (
            folder / "drop",
            self.settings.paths.originals / job_id,
            self.quarantine.folder(job_id) / "drop",
        ):
            entries = (
                [p for p in place.iterdir() if p.name not in KEPT_NAMES] if place.is_dir() else []
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


@dataclass(frozen=True)
class _Matched:
    """A screened and matched group, waiting for the other groups of its patient."""

    index: int
    group: PatientGroup
    passed: list[Path]
    match: PatientMatch
    result: GroupOutcome


def _by_patient(matched: Sequence[_Matched]) -> list[list[_Matched]]:
    """The matched groups by pseudonym, in order of their first group."""
    patients: dict[str, list[_Matched]] = {}
    for m in matched:
        patients.setdefault(m.match.pseudonym, []).append(m)
    return list(patients.values())


def _merged_outcome(results: Sequence[GroupOutcome]) -> GroupOutcome:
    """One outcome for groups of one patient, keeping what screening decided for each."""
    if len(results) == 1:
        return results[0]
    merged = GroupOutcome(
        key=results[0].key,
        outcome=JobState.DELIVERED,
        pseudonym=results[0].pseudonym,
        merged=[r.key for r in results[1:]],
    )
    for r in results:
        merged.duplicates += r.duplicates
        for code, n in r.quarantined.items():
            merged.quarantined[code] = merged.quarantined.get(code, 0) + n
        merged.report += r.report
    return merged


def _finished_groups(state: Path) -> dict[str, GroupOutcome]:
    """The recorded outcome of every finished group of a job, by group key (a patient's
    outcome under the key of each group merged into it)."""
    finished: dict[str, GroupOutcome] = {}
    for marker in sorted(state.glob("group-*.json")):
        outcome = GroupOutcome(**json.loads(marker.read_text(encoding="utf-8")))
        for key in (outcome.key, *outcome.merged):
            finished[key] = outcome
    return finished


# Per-file verdicts taken while de-identifying (the file's pixels or structure), by code.
_FILE_MESSAGES = {
    "dicom.truncated": "files cut short: the pixel data is incomplete",
    "screen.text_in_pixels": "at-risk instances with text in their pixels, for a person to review",
    "screen.pixels_unchecked": "at-risk instances whose pixels could not be checked for text",
    "verify.phi_in_pixels": "the patient's identity is burned into the pixels",
}


def _internal(exc: BaseException) -> QuarantineError:
    return QuarantineError("internal", f"unexpected {type(exc).__name__}; see the daemon log")
