"""Time matching one incoming patient against a registry of N patients (default 1,000,000).

Usage: python bench/bench_registry.py [--patients N] [--queries Q] [--url URL] [--no-fill]

Fills a fresh database (SQLite in a temporary folder unless --url, e.g. a PostgreSQL
``postgresql+psycopg://...`` of an empty database) with synthetic patients through bulk inserts
of the same rows the registry writes, then times ``match_or_register`` for incoming patients
(known ones with a typo, unknown ones, with and without birth date) and the read-only decision
of ``lookup`` (``Registry.find``). Target: median < 10 ms, p95 < 30 ms per case.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, text

from dicomdrop.config import RegistrySettings
from dicomdrop.store.db import Store
from dicomdrop.store.models import NameKey, NameVariant, Patient
from dicomdrop.store.names import blocking_keys, normalize_name
from dicomdrop.store.registry import PatientIdentity, Registry

_FAMILY_WORDS = """
smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill
flores green adams nelson baker hall rivera campbell mitchell carter roberts muller schmidt
schneider fischer weber meyer wagner becker schulz hoffmann rossi russo ferrari esposito bianchi
romano colombo ricci dubois durand leroy moreau simon laurent lefebvre michel garnier jansen
devries bakker visser smit meijer novak kowalski nowak wisniewski ivanov petrov tanaka suzuki
sato takahashi watanabe kim park choi chen wang li zhang liu yang huang zhao wu zhou
"""
FAMILY = _FAMILY_WORDS.split()
_GIVEN_WORDS = """
james mary john patricia robert jennifer michael linda william elizabeth david barbara richard
susan joseph jessica thomas sarah charles karen daniel nancy matthew lisa anthony betty mark
margaret donald sandra steven ashley paul kimberly andrew emily joshua donna kenneth michelle
kevin dorothy brian carol george amanda hans anna peter maria klaus ursula jurgen monika stefan
sabine giovanni giulia marco francesca jean marie pierre claire pieter sanne jan agnieszka ivan
olga hiroshi yuki kenji minsu jisoo wei ling
"""
GIVEN = _GIVEN_WORDS.split()


def synthetic_people(count: int, rng: random.Random) -> list[tuple[str, str, str]]:
    people = []
    for _ in range(count):
        name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        if rng.random() < 0.4:
            name += f"^{rng.choice(GIVEN)}"
        birth = f"{rng.randint(1925, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        people.append((name, birth, rng.choice("MF")))
    return people


def fill(store: Store, people: list[tuple[str, str, str]]) -> None:
    with store.session() as session:
        for start in range(0, len(people), 5000):
            chunk = people[start : start + 5000]
            base = start + 1
            session.execute(
                insert(Patient),
                [
                    {"id": base + i, "pseudonym": f"BENCH{base + i:08d}",
                     "pseudonym_prefix": "BENCH", "pseudonym_length": 8, "birth_date": birth,
                     "sex": sex}
                    for i, (_, birth, sex) in enumerate(chunk)
                ],
            )  # fmt: skip
            variants, keys = [], []
            for i, (name, _, _) in enumerate(chunk):
                for form in normalize_name(name):
                    variants.append({"patient_id": base + i, "raw": name, "normalized": form.key,
                                     "seen_in": "bench"})  # fmt: skip
                    keys.extend({"patient_id": base + i, "key": k} for k in blocking_keys(form))
            session.execute(insert(NameVariant), variants)
            session.execute(insert(NameKey), [dict(t) for t in {tuple(k.items()) for k in keys}])


def typo(name: str, rng: random.Random) -> str:
    family, given, *rest = name.split("^")
    if len(family) > 4:
        i = rng.randrange(1, len(family) - 2)
        family = family[:i] + family[i + 1] + family[i] + family[i + 2 :]
    return "^".join([family.upper(), given, *rest])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--url", default=None)
    parser.add_argument(
        "--no-fill",
        action="store_true",
        help="the database at --url was filled by an earlier run with the same --patients",
    )
    args = parser.parse_args()
    rng = random.Random(1234)
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite:///{Path(folder) / 'bench.sqlite3'}"
        store = Store.open(url)
        people = synthetic_people(args.patients, rng)
        started = time.perf_counter()
        if not args.no_fill:
            fill(store, people)
        if not store.is_sqlite:
            # The bulk inserts chose the ids: move the sequences past them. And gather the
            # planner's statistics now, as autovacuum does a minute after a bulk load: without
            # them PostgreSQL plans the first queries for empty tables (ten times slower).
            with store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
            with store.session() as session:
                for table in ("patients", "name_variants", "name_keys"):
                    session.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
        print(
            f"{store.engine.dialect.name}: filled {args.patients} patients in "
            f"{time.perf_counter() - started:.1f} s"
        )
        registry = Registry(store, bytes(32), RegistrySettings())
        labels = ["known (typo)", "unknown", "no birth date, new", "no birth date, common",
                  "lookup (find), typo"]  # fmt: skip
        timings: dict[str, list[float]] = {label: [] for label in labels}
        outcomes: dict[str, dict[str, int]] = {k: {} for k in timings}
        for q in range(args.queries):
            name, birth, sex = rng.choice(people)
            cases = {
                "known (typo)": PatientIdentity(typo(name, rng), birth_date=birth, sex=sex),
                "unknown": PatientIdentity(
                    f"{rng.choice(FAMILY)}x^{rng.choice(GIVEN)}", birth_date=birth, sex=sex
                ),
                "no birth date, new": PatientIdentity(f"Q{q}{name}"),
                "no birth date, common": PatientIdentity(typo(name, rng)),
                "lookup (find), typo": PatientIdentity(typo(name, rng), birth_date=birth),
            }
            for label, identity in cases.items():
                t0 = time.perf_counter()
                if label.startswith("lookup"):
                    result = registry.find(identity)
                else:
                    result = registry.match_or_register(identity, seen_in="bench")
                timings[label].append((time.perf_counter() - t0) * 1000)
                outcomes[label][result.status] = outcomes[label].get(result.status, 0) + 1
        for label, values in timings.items():
            values.sort()
            p95 = values[int(len(values) * 0.95) - 1]
            print(
                f"{label:22} median {statistics.median(values):6.1f} ms  p95 {p95:6.1f} ms  "
                f"max {values[-1]:6.1f} ms  outcomes {outcomes[label]}"
            )
        store.close()


if __name__ == "__main__":
    main()
