"""Two processes registering the same new patient at the same moment end with one patient."""

from __future__ import annotations

import multiprocessing
from typing import Any

from sqlalchemy import func, select
from store_helpers import make_registry, person

from dicomdrop.store.models import Identifier, NameVariant, Patient

WORKERS = 2


def _register(url: str, barrier: Any, queue: Any, use_id: bool) -> None:
    registry = make_registry(url)
    try:
        identity = person("Nakamura^Yuki", patient_id="P77" if use_id else None, sex="F")
        barrier.wait(timeout=60)
        result = registry.match_or_register(identity, seen_in="race")
        queue.put((result.status, result.pseudonym))
    except Exception as exc:  # reported to the parent test
        queue.put(("error", repr(exc)))
    finally:
        registry.store.close()


def _race(url: str, *, use_id: bool) -> list[tuple[str, str]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    queue = context.Queue()
    processes = [
        context.Process(target=_register, args=(url, barrier, queue, use_id))
        for _ in range(WORKERS)
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return results


def _assert_one_patient(url: str, results: list[tuple[str, str]]) -> None:
    assert all(status in ("new", "matched") for status, _ in results), results
    assert sorted(status for status, _ in results) == ["matched"] * (WORKERS - 1) + ["new"]
    assert len({pseudonym for _, pseudonym in results}) == 1
    registry = make_registry(url)
    try:
        with registry.store.session() as session:
            for model in (Patient, NameVariant):
                assert session.scalar(select(func.count()).select_from(model)) == 1
    finally:
        registry.store.close()


def test_parallel_registration_by_name_makes_one_patient(db_url: str) -> None:
    _assert_one_patient(db_url, _race(db_url, use_id=False))


def test_parallel_registration_by_patient_id_makes_one_patient(db_url: str) -> None:
    results = _race(db_url, use_id=True)
    _assert_one_patient(db_url, results)
    registry = make_registry(db_url)
    try:
        with registry.store.session() as session:
            assert session.scalar(select(func.count()).select_from(Identifier)) == 1
    finally:
        registry.store.close()
