"""Names v2: re-normalise every stored name variant and rebuild the name keys.

The normalisation of dicomdrop/store/names.py changed (generational suffixes kept and marked,
a lone letter is an initial and no longer a particle, kana keep their marks, more ideograph
ranges kept). A registry written before would hold keys the matcher no longer produces: an
exact name would only be found as a fuzzy one. This migration recomputes them from the raw
names with the normalisation shipped (no schema change), rewriting only the patients whose
forms change (a registry of a million patients is read once, and few are written).
Downgrading leaves the data as it is.

Revision ID: 0005_names_v2
Revises: 0004_audit_chain
Create Date: 2026-12-04 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dicomdrop.store.names import blocking_keys, normalize_name

revision = '0005_names_v2'
down_revision = '0004_audit_chain'
branch_labels = None
depends_on = None

_variants = sa.table(
    "name_variants",
    sa.column("id", sa.Integer),
    sa.column("patient_id", sa.Integer),
    sa.column("raw", sa.String),
    sa.column("normalized", sa.String),
    sa.column("seen_in", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_keys = sa.table(
    "name_keys",
    sa.column("id", sa.Integer),
    sa.column("patient_id", sa.Integer),
    sa.column("key", sa.String),
)


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(
            _variants.c.id,
            _variants.c.patient_id,
            _variants.c.raw,
            _variants.c.normalized,
            _variants.c.seen_in,
            _variants.c.created_at,
        ).order_by(_variants.c.patient_id, _variants.c.id)
    ).all()
    by_patient: dict[int, list[sa.Row[tuple[object, ...]]]] = {}
    for row in rows:
        by_patient.setdefault(int(row.patient_id), []).append(row)
    for patient_id, variants in by_patient.items():
        wanted: list[dict[str, object]] = []
        seen: set[tuple[str, str]] = set()
        keys: set[str] = set()
        for row in variants:
            for form in normalize_name(str(row.raw)):
                keys |= blocking_keys(form)
                if (str(row.raw), form.key) in seen:
                    continue
                seen.add((str(row.raw), form.key))
                wanted.append(
                    {
                        "patient_id": patient_id,
                        "raw": row.raw,
                        "normalized": form.key,
                        "seen_in": row.seen_in,
                        "created_at": row.created_at,
                    }
                )
        current = [(str(r.raw), str(r.normalized)) for r in variants]
        if current == [(str(w["raw"]), str(w["normalized"])) for w in wanted]:
            continue  # the same forms give the same keys: most patients need nothing
        connection.execute(sa.delete(_variants).where(_variants.c.patient_id == patient_id))
        if wanted:
            connection.execute(sa.insert(_variants), wanted)
        connection.execute(sa.delete(_keys).where(_keys.c.patient_id == patient_id))
        if keys:
            connection.execute(
                sa.insert(_keys), [{"patient_id": patient_id, "key": k} for k in sorted(keys)]
            )


def downgrade() -> None:
    pass
