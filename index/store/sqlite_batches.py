"""Lists of values bound into `IN (…)` a slice at a time, for both SQLite modules of the backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

BIND_BATCH = 900  # values bound per statement: SQLite's default limit is 999


def in_batches(values: Sequence) -> Iterator[tuple[list, str]]:
    """`values` in slices small enough to bind, each with its "?,?,…" placeholder list."""
    for start in range(0, len(values), BIND_BATCH):
        part = list(values[start : start + BIND_BATCH])
        yield part, ",".join("?" * len(part))
