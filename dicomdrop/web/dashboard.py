"""The dashboard's data: ``dicomdrop status``'s report (the same function), and jobs delivered
and quarantined per day for the chart.

The per-day counts come from the jobs' state events, not from their current state: a job held on
Monday and retried on Tuesday counts as quarantined on Monday and (its new job) delivered on
Tuesday, which is what a steward wants to see of the week's work.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from dicomdrop.config import Settings
from dicomdrop.jobs import JobState
from dicomdrop.store.db import Store
from dicomdrop.store.models import JobEvent

#: The series of the chart, and the job states each counts.
SERIES = {
    "delivered": (JobState.DELIVERED,),
    "quarantined": (JobState.QUARANTINED, JobState.WAITING),
    "failed": (JobState.FAILED,),
}


def status(settings: Settings) -> dict[str, Any]:
    """What ``dicomdrop status`` reports, as its JSON document's fields."""
    from dicomdrop.commands.daemon import status_report

    return status_report(settings)


def per_day(store: Store, *, days: int = 14) -> list[tuple[date, dict[str, int]]]:
    """Jobs that became delivered, quarantined (or waiting) and failed on each UTC day of the last
    ``days`` days (today included), oldest day first."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    table: dict[date, Counter[str]] = {first + timedelta(days=i): Counter() for i in range(days)}
    series_of = {state.value: name for name, states in SERIES.items() for state in states}
    query = select(JobEvent.at, JobEvent.state).where(
        JobEvent.kind == "state",
        JobEvent.state.in_(list(series_of)),
        JobEvent.at >= start,
    )
    with store.session(readonly=True) as session:
        for at, state in session.execute(query):
            moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
            day = moment.astimezone(UTC).date()
            if day in table and state is not None:
                table[day][series_of[state]] += 1
    return [(day, {name: counts.get(name, 0) for name in SERIES}) for day, counts in table.items()]
