"""Replay CSV files of readings in time order: real time, sped up, or as fast as possible.

A file has a time column, one or more value columns (several make a multivariate reading) and
optionally a stream-id column; without one, the file's stem is the stream id, so NAB files
(`timestamp,value`) replay as one stream each. Timestamps may be `YYYY-MM-DD HH:MM:SS[.fff]`,
ISO 8601 (`T`, an offset or `Z`), or epoch seconds; times without an offset are taken as UTC.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple


class Row(NamedTuple):
    """One reading from a CSV file."""

    ts: float  # epoch seconds
    stream: str
    values: tuple[float, ...]


def parse_timestamp(text: str) -> float:
    """Return epoch seconds for a `YYYY-MM-DD HH:MM:SS`, ISO 8601 or epoch-seconds string."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"timestamp {text!r} is not finite")
        return value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"cannot parse timestamp {text!r}; use YYYY-MM-DD HH:MM:SS, ISO 8601 or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# First-column names that mark a timestamp / index column rather than a value column.
_TIME_NAMES = {"timestamp", "time", "date", "datetime", "ts", "t", "index", "time_s", "epoch"}
# Names that mark a time column in any position.
_TIME_COLUMN_NAMES = {"timestamp", "time", "datetime", "date"}


def find_time_column(header: Sequence[str], value_columns: Sequence[str] = ()) -> str | None:
    """Return a first column named like a timestamp or index, else one named like a time
    (`rnnstream train` and `rnnstream report` look for a time column so), or None."""
    if header and header[0].lower() in _TIME_NAMES and header[0] not in value_columns:
        return header[0]
    for name in header:
        if name.lower() in _TIME_COLUMN_NAMES and name not in value_columns:
            return name
    return None


def is_number(cell: str) -> bool:
    """Whether a CSV cell reads as a number (float() accepts it)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv(
    path: str | os.PathLike,
    *,
    stream_column: str | None = None,
    time_column: str | None = None,
    value_columns: Sequence[str] | None = None,
    stream: str | None = None,
) -> list[Row]:
    """Read a CSV of readings, sorted by time (ties keep file order).

    Without `time_column` the time column is found as `find_time_column` finds it. Without
    `stream_column` every row belongs to `stream` (default: the file's stem). Without
    `value_columns` every column other than the time and stream columns is a value column.
    Raise ValueError naming the file and line for a missing column, an unparsable cell or a
    row with more or fewer fields than the header.
    """
    path = Path(path)
    # utf-8-sig: a byte order mark (Excel writes one) must not stick to the first column name
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: the file is empty") from None
        if time_column is None:
            time_column = find_time_column(header, value_columns or ())
            if time_column is None:
                raise ValueError(
                    f"{path}: no column named like a time ({', '.join(sorted(_TIME_COLUMN_NAMES))}"
                    f"); name it with --time-column; the header is {header}"
                )
        missing = [
            c
            for c in [time_column, stream_column, *(value_columns or [])]
            if c is not None and c not in header
        ]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r}; the header is {header}")
        t_idx = header.index(time_column)
        s_idx = None if stream_column is None else header.index(stream_column)
        if value_columns is None:
            v_idx = [i for i in range(len(header)) if i not in (t_idx, s_idx)]
        else:
            v_idx = [header.index(c) for c in value_columns]
        if not v_idx:
            raise ValueError(f"{path}: no value column besides time and stream")
        default_stream = stream if stream is not None else path.stem
        # A column of ids taken for a value column (no stream column named) is the usual cause
        # of a non-number among the values: point at the option then.
        hint_stream_column = value_columns is None and stream_column is None
        rows = []
        for line, cells in enumerate(reader, start=2):
            if not cells or all(not c.strip() for c in cells):
                continue
            # A field more than the header (an unquoted "1,234") would shift or drop a value
            # unseen; `rnnstream train` and `report` refuse such a row too.
            if len(cells) != len(header):
                raise ValueError(
                    f"{path}:{line}: {len(cells)} fields, the header has {len(header)}"
                )
            try:
                ts = parse_timestamp(cells[t_idx])
                values = tuple(cell_number(cells[i], header[i], hint_stream_column) for i in v_idx)
                row_stream = default_stream if s_idx is None else cells[s_idx].strip()
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
            if not row_stream:
                raise ValueError(f"{path}:{line}: empty stream id")
            rows.append(Row(ts, row_stream, values))
    rows.sort(key=lambda r: r.ts)  # stable: equal times keep file order
    return rows


def cell_number(cell: str, column: str, hint_stream_column: bool = False) -> float:
    """Return a value cell as a float, or raise ValueError naming its column (and, with
    `hint_stream_column`, the option for a column of stream ids)."""
    try:
        return float(cell)
    except ValueError:
        if not cell.strip():  # a reading missing there, not a column of ids
            raise ValueError(
                f"column {column!r} has an empty cell; a reading needs every value"
            ) from None
        hint = f" (if it holds stream ids: --stream-column {column})" if hint_stream_column else ""
        raise ValueError(f"column {column!r} is not a number: {cell!r}{hint}") from None


def merge(*row_lists: Iterable[Row]) -> list[Row]:
    """Merge several files' rows into one time-ordered list (ties keep argument order)."""
    rows = [r for rows in row_lists for r in rows]
    rows.sort(key=lambda r: r.ts)
    return rows


def paced(
    rows: Sequence[Row],
    *,
    speed: float | None = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    max_gap: float | None = None,
) -> Iterator[list[Row]]:
    """Yield groups of rows sharing a timestamp, each when its time comes.

    With `speed` = 1 the gaps between timestamps are kept, with `speed` = X they are X times
    shorter, and with `speed` = None rows come as fast as the consumer takes them. The schedule is
    anchored at the first row, so time spent by the consumer is not added to the gaps. `max_gap`
    caps one wait (in wall seconds), useful for files with long holes.
    """
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise ValueError(
            f"speed must be a finite number > 0 (or None for as fast as possible), not {speed}"
        )
    if max_gap is not None and not (math.isfinite(max_gap) and max_gap >= 0):
        raise ValueError(f"max_gap must be a finite number >= 0 (or None: no cap), not {max_gap}")
    if not rows:
        return
    t_first = rows[0].ts
    start = clock()
    skipped = 0.0  # wall seconds removed by max_gap
    i = 0
    while i < len(rows):
        j = i + 1
        while j < len(rows) and rows[j].ts == rows[i].ts:
            j += 1
        if speed is not None:
            due = start + (rows[i].ts - t_first) / speed - skipped
            wait = due - clock()
            if max_gap is not None and wait > max_gap:
                skipped += wait - max_gap
                wait = max_gap
            if wait > 0:
                sleep(wait)
        yield list(rows[i:j])
        i = j
