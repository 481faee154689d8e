"""Per-file work shared between job processes: the same results as a plain ``map``, in order,
with errors raised where the map is read, and chunks run by a worker that has no job left."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from multiprocessing.queues import Queue
from pathlib import Path

import pytest
from conftest import write_config
from corpus import write_series
from factories import MUELLER, SMITH_JOAN, SMITH_JOHN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from dicomdrop import work_sharing
from dicomdrop.cli import main
from dicomdrop.config import load_settings
from dicomdrop.runner import _job_process_context
from dicomdrop.work_sharing import Channels, SharedExecutor, WorkSharingError


def square(value: int) -> int:
    return value * value


def add(left: int, right: int) -> int:
    return left + right


def fail_on_seven(value: int) -> int:
    if value == 7:
        raise ValueError("seven")
    return value


def slow_pid(value: int) -> tuple[int, int]:
    time.sleep(0.02)
    return value, os.getpid()


class Unpicklable(Exception):
    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("no pickling")


def raise_unpicklable(value: int) -> int:
    raise Unpicklable(value)


@pytest.fixture
def executor() -> Iterator[SharedExecutor]:
    channels = Channels.make(_job_process_context(), 1)
    yield SharedExecutor(channels, slot=0)
    channels.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(st.integers(-1000, 1000), max_size=60), chunksize=st.integers(1, 25))
def test_a_map_alone_gives_what_map_gives(
    executor: SharedExecutor, values: list[int], chunksize: int
) -> None:
    assert list(executor.map(square, values, chunksize=chunksize)) == [v * v for v in values]


def test_several_iterables_and_repeated_arguments_are_zipped(executor: SharedExecutor) -> None:
    from itertools import repeat

    assert list(executor.map(add, [1, 2, 3], repeat(10), chunksize=2)) == [11, 12, 13]


def test_an_error_is_raised_where_the_map_is_read_and_the_next_map_is_not_confused(
    executor: SharedExecutor,
) -> None:
    results = executor.map(fail_on_seven, range(20), chunksize=3)
    assert [next(results) for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="seven"):
        list(results)
    # Every chunk of the failed map answered before it ended: none is left to mix in here.
    assert list(executor.map(square, range(10), chunksize=4)) == [v * v for v in range(10)]


def test_a_map_left_early_waits_for_its_chunks(executor: SharedExecutor) -> None:
    results = executor.map(square, range(30), chunksize=2)
    assert next(results) == 0
    results.close()  # type: ignore[attr-defined]  # the caller stops reading
    assert list(executor.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]


def test_an_exception_that_does_not_pickle_still_reaches_the_owner(
    executor: SharedExecutor,
) -> None:
    with pytest.raises(WorkSharingError, match="Unpicklable in a shared chunk"):
        list(executor.map(raise_unpicklable, [1, 2]))


def test_submit_runs_at_once(executor: SharedExecutor) -> None:
    assert executor.submit(add, 2, 3).result() == 5
    with pytest.raises(ValueError, match="seven"):
        executor.submit(fail_on_seven, 7).result()


def _helper(channels: Channels) -> None:
    work_sharing.join(channels)
    os._exit(0 if work_sharing.help_others() > 0 else 3)


def test_a_worker_with_no_job_left_runs_the_chunks_of_another() -> None:
    context = _job_process_context()
    channels = Channels.make(context, 2)
    helper = context.Process(target=_helper, args=(channels,))
    helper.start()
    owner = SharedExecutor(channels, slot=channels.slots.get(timeout=10))
    try:
        results = list(owner.map(slow_pid, range(40), chunksize=2))
    finally:
        channels.release.set()
        helper.join(timeout=30)
        channels.close()
    assert [value for value, _ in results] == list(range(40))
    assert {pid for _, pid in results} == {os.getpid(), helper.pid}
    assert helper.exitcode == 0  # it ran chunks, and returned once the run was over


def _owner(channels: Channels, start: int, out: Queue[list[int]]) -> None:
    work_sharing.join(channels)
    sharer = work_sharing.current()
    assert sharer is not None
    values = list(sharer.map(slow_pid, range(start, start + 30), chunksize=3))
    out.put([value for value, _ in values])
    out.close()
    out.join_thread()  # flushed before the hard exit
    os._exit(0)


def test_two_owners_that_take_each_others_chunks_each_get_their_own_results() -> None:
    context = _job_process_context()
    channels = Channels.make(context, 2)
    out: Queue[list[int]] = context.Queue()
    owners = [context.Process(target=_owner, args=(channels, s, out)) for s in (0, 100)]
    for process in owners:
        process.start()
    got = sorted((out.get(timeout=60), out.get(timeout=60)))
    for process in owners:
        process.join(timeout=30)
    channels.close()
    out.close()
    out.join_thread()
    assert got == [list(range(30)), list(range(100, 130))]
    assert [p.exitcode for p in owners] == [0, 0]


def test_a_process_outside_a_sharing_run_has_no_shared_executor() -> None:
    assert work_sharing.current() is None
    assert work_sharing.help_others() == 0


def test_process_with_more_drops_than_workers_delivers_each_drop_whole(tmp_path: Path) -> None:
    """Three drops on two workers: the worker that runs out of jobs takes on per-file work of
    the others, and every drop is still delivered whole, as its own archive, leaving no work."""
    config = write_config(tmp_path / "site")
    assert main(["init", "--config", str(config)]) == 0
    drops = {
        "big": write_series(tmp_path / "big" / "s", SMITH_JOAN, 1, 1, 150),
        "mid": write_series(tmp_path / "mid" / "s", MUELLER, 1, 1, 60),
        "small": write_series(tmp_path / "small" / "s", SMITH_JOHN, 1, 1, 3),
    }
    argv = ["process", "--config", str(config), "--workers", "2"]
    assert main([*argv, *(str(tmp_path / name) for name in drops)]) == 0

    settings = load_settings(config)
    archives = sorted(settings.paths.outbox.glob("*.zip"))
    counts = []
    for archive in archives:
        with zipfile.ZipFile(archive) as zf:
            assert zf.testzip() is None
            manifest = json.loads(zf.read("manifest.json"))
            members = [n for n in zf.namelist() if n.endswith(".dcm")]
            assert len(members) == manifest["instances"]
            for name in members:
                ds = dcmread(io.BytesIO(zf.read(name)))
                assert str(ds.PatientID) == manifest["pseudonym"]
        counts.append(manifest["instances"])
    assert sorted(counts) == [3, 60, 150]
    assert list(settings.paths.work.iterdir()) == []
