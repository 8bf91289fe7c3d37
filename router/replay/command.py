"""`run_replay`: what `llm-router replay --log F --policy NEW [--against OLD] [--trace T.csv] [--json]` runs.

Exit codes: 0 the new policy serves every request the old one (or the log)
served; 1 it loses some (unroutable or refused by quota); 2 the input could
not be read (the ConfigError is printed, naming file and field).

A policy directory holds `*deployments.yaml` (`deployments.yaml` when there
are several), optionally `*tenants.yaml` (likewise), and the policy files:
those in `policies/` when that subdirectory exists, else the directory's
other YAML files, less `exclude` (`demo.yaml` by default, as the router's
`policy_exclude`). The repository root works as is (`config/` is searched
too). Callers that already hold `ConfigFiles` (from settings) pass those.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from router.decision_log import DecisionRecord, RecordReader
from router.errors import ConfigError, ConfigIssue
from router.policy.reload import ConfigFiles, load_snapshot
from router.policy.snapshot import Snapshot
from router.replay.diff import loses_requests, replay
from router.replay.render import render_json, render_text
from router.replay.workload import records_from_trace


def _yaml(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def _one(config: Path, kind: str, *, required: bool) -> Path | None:
    found = [p for p in _yaml(config) if p.stem.endswith(kind)]
    exact = [p for p in found if p.stem == kind]
    if len(found) == 1 or len(exact) == 1:
        return (exact or found)[0]
    if found or required:
        names = ", ".join(p.name for p in found) or "none"
        raise ConfigError([ConfigIssue(str(config), "", f"expected one *{kind}.yaml, found {names}")])
    return None


def config_files_in(directory: Path, *, exclude: frozenset[str] = frozenset({"demo.yaml"})) -> ConfigFiles:
    """The files of the policy set in `directory` (see the module docstring); ConfigError if ambiguous."""
    if not directory.is_dir():
        raise ConfigError([ConfigIssue(str(directory), "", "not a directory")])
    config = directory / "config" if (directory / "config").is_dir() else directory
    deployments = _one(config, "deployments", required=True)
    assert deployments is not None
    tenants = _one(config, "tenants", required=False)
    policy_dir = directory / "policies"
    candidates = _yaml(policy_dir) if policy_dir.is_dir() else _yaml(directory)
    policies = tuple(p for p in candidates if p not in (deployments, tenants) and p.name not in exclude
                     and not p.stem.endswith(("deployments", "tenants")))
    if not policies:
        raise ConfigError([ConfigIssue(str(directory), "", "no policy files found")])
    return ConfigFiles(deployments, policies, tenants)


def _load(where: Path | ConfigFiles) -> Snapshot:
    return load_snapshot(where if isinstance(where, ConfigFiles) else config_files_in(where))


def run_replay(*, log: Path | None, policy: Path | ConfigFiles, against: Path | ConfigFiles | None = None,
               trace: Path | None = None, as_json: bool = False, seed: int = 0, trace_tenant: str = "default",
               out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Replay the log (and/or trace) under `policy` (against `against`, else the log); print; the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        new = _load(policy)
        old = _load(against) if against is not None else None
        records: list[DecisionRecord] = []
        invalid = 0
        if log is not None:
            if not log.exists():
                raise ConfigError([ConfigIssue(str(log), "", "no such decision log")])
            reader = RecordReader(log)
            records.extend(reader)
            invalid = reader.invalid
        if trace is not None:
            records.extend(records_from_trace(trace, tenant=trace_tenant))
        if log is None and trace is None:
            raise ConfigError([ConfigIssue("replay", "--log", "give a decision log (--log) or a trace (--trace)")])
    except ConfigError as exc:
        print(f"replay: {exc}", file=err)
        return 2
    if invalid:
        print(f"replay: skipped {invalid} unreadable line(s) of {log}", file=err)
    diff = replay(records, new, old, seed=seed, new_label=_label(policy),
                  old_label=_label(against) if against is not None else None)
    out.write(render_json(diff) + "\n" if as_json else render_text(diff))
    return 1 if loses_requests(diff) else 0


def _label(where: Path | ConfigFiles) -> str:
    return str(where.policies[0].parent if isinstance(where, ConfigFiles) else where)
