"""Replay logged (or traced) requests under an edited policy, and say what would change.

Nothing is sent to a provider and LiteLLM is never imported: decisions come
from `router.routing.decide`, health from the log's own figures, prices from
the policies, budgets from a simulation of the tenants file.

>>> code = run_replay(log=Path("decisions.jsonl"), policy=Path("new/"), against=Path("."))  # doctest: +SKIP
"""

from __future__ import annotations

from router.replay.budgets import BudgetSim
from router.replay.command import config_files_in, run_replay
from router.replay.diff import (
    CACHE,
    PolicyTotals,
    ReplayDiff,
    Replayed,
    RuleChange,
    as_logged,
    loses_requests,
    redecide,
    replay,
)
from router.replay.health import SyntheticHealth
from router.replay.render import render_json, render_text
from router.replay.workload import records_from_trace

__all__ = [
    "CACHE",
    "BudgetSim",
    "PolicyTotals",
    "ReplayDiff",
    "Replayed",
    "RuleChange",
    "SyntheticHealth",
    "as_logged",
    "config_files_in",
    "loses_requests",
    "records_from_trace",
    "redecide",
    "render_json",
    "render_text",
    "replay",
    "run_replay",
]
