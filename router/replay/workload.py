"""Requests to replay: a decision log's records, or a workload trace turned into records.

A trace in the Azure LLM inference trace format (`TIMESTAMP,ContextTokens,
GeneratedTokens`, as `router/data/trace-sample.csv`) carries sizes and
arrival times only: each row becomes a chat request of one tenant with
`prompt_tokens = ContextTokens` and `max_tokens = GeneratedTokens`, and no
logged decision or outcome.

>>> rows = records_from_trace(Path("router/data/trace-sample.csv"), tenant="acme")  # doctest: +SKIP
>>> rows[0].prompt_tokens, rows[0].max_tokens  # doctest: +SKIP
(4808, 10)
"""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterator
from pathlib import Path

from router.decision_log import DecisionRecord
from router.errors import ConfigError, ConfigIssue

TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def _timestamp(text: str) -> float:
    """Unix seconds of "2023-11-16 18:17:03.9799600" (UTC; digits past microseconds are dropped)."""
    head, _, frac = text.strip().partition(".")
    moment = datetime.datetime.strptime(head, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    return moment.timestamp() + (float(f"0.{frac[:6]}") if frac else 0.0)


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if row and not row[0].startswith("#"):
                yield lineno, row


def records_from_trace(path: Path, *, tenant: str = "default", max_rows: int | None = None) -> list[DecisionRecord]:
    """One chat request per trace row; ConfigError naming the file, line and column when a row is bad."""
    rows = _rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise ConfigError([ConfigIssue(str(path), "", "empty trace")]) from None
    missing = [c for c in TRACE_COLUMNS if c not in header]
    if missing:
        raise ConfigError([ConfigIssue(str(path), "", f"trace lacks columns {missing}; needs {list(TRACE_COLUMNS)}")])
    at = {c: header.index(c) for c in TRACE_COLUMNS}
    out: list[DecisionRecord] = []
    for lineno, row in rows:
        if max_rows is not None and len(out) >= max_rows:
            break
        column = "TIMESTAMP"
        try:
            t = _timestamp(row[at[column]])
            column = "ContextTokens"
            prompt = int(row[at[column]])
            column = "GeneratedTokens"
            generated = int(row[at[column]])
            out.append(DecisionRecord(time=t, tenant=tenant, prompt_tokens=prompt, max_tokens=generated))
        except (ValueError, IndexError) as exc:
            raise ConfigError([ConfigIssue(str(path), column, f"unreadable value ({exc})", lineno)]) from None
    return out
