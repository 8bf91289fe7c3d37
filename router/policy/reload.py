"""Load the configuration files into a snapshot, and reload them live.

The router serves from `PolicySource.current`, an immutable `Snapshot`. A
reload validates every file anew and swaps the reference only when all of
them are good; in-flight requests keep the snapshot they started with, and an
invalid edit leaves the last good snapshot serving while `last_error` says
what is wrong.

>>> source = PolicySource.from_dirs(Path("config"), Path("policies"))  # doctest: +SKIP
>>> source.current.default_route  # doctest: +SKIP
'default'
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from router.errors import ConfigError, ConfigIssue
from router.periodic import Periodic
from router.policy.loader import load_model
from router.policy.snapshot import Snapshot, compile_snapshot
from router.pricing import PriceBook
from router.quota.config import TenantsFile
from router.schema import DeploymentsFile, PolicyFile

log = logging.getLogger("router.policy")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload did: `changed` when a new snapshot now serves."""

    ok: bool
    changed: bool
    version: int
    error: ConfigError | None = None


@dataclass(frozen=True, slots=True)
class ConfigFiles:
    """The files a snapshot is built from."""

    deployments: Path
    policies: tuple[Path, ...]
    tenants: Path | None = None
    policy_dir: Path | None = None
    #: File names in `policy_dir` that are not loaded (the demo's own policy lives there).
    exclude: frozenset[str] = frozenset()

    def current_policies(self) -> tuple[Path, ...]:
        """Policy files now on disk (a directory is re-listed, so new files are seen)."""
        if self.policy_dir is None:
            return self.policies
        return tuple(sorted(
            p for p in self.policy_dir.glob("*.y*ml")
            if p.suffix in (".yaml", ".yml") and p.name not in self.exclude
        ))

    def all(self) -> tuple[Path, ...]:
        extra = (self.tenants,) if self.tenants is not None else ()
        return (self.deployments, *self.current_policies(), *extra)


def load_snapshot(files: ConfigFiles, *, default_route: str | None = None,
                  prices: PriceBook | None = None, version: int = 0) -> Snapshot:
    """Validate every file and compile them; one ConfigError lists all problems."""
    issues: list[ConfigIssue] = []
    deployments: DeploymentsFile | None = None
    policies: list[tuple[str, PolicyFile]] = []
    tenants: TenantsFile | None = None
    try:
        deployments, _ = load_model(files.deployments, DeploymentsFile)
    except ConfigError as exc:
        issues.extend(exc.issues)
    policy_paths = files.current_policies()
    if not policy_paths:
        issues.append(ConfigIssue(str(files.policy_dir or "policies"), "", "no policy files found"))
    for path in policy_paths:
        try:
            policies.append((str(path), load_model(path, PolicyFile)[0]))
        except ConfigError as exc:
            issues.extend(exc.issues)
    if files.tenants is not None and files.tenants.exists():
        try:
            tenants, _ = load_model(files.tenants, TenantsFile)
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues or deployments is None:
        raise ConfigError(issues)
    return compile_snapshot(
        deployments.deployments, str(files.deployments), policies,
        tenants=tenants, tenants_file=str(files.tenants), default_route=default_route, prices=prices, version=version,
    )


def _mtimes(paths: Sequence[Path]) -> tuple[tuple[str, int], ...]:
    out = []
    for p in paths:
        try:
            out.append((str(p), p.stat().st_mtime_ns))
        except OSError:
            out.append((str(p), -1))
    return tuple(out)


class PolicySource:
    """Holds the serving snapshot and replaces it when the files change."""

    def __init__(
        self,
        snapshot: Snapshot,
        files: ConfigFiles | None = None,
        *,
        default_route: str | None = None,
        on_reload: Callable[[ReloadResult], None] | None = None,
    ) -> None:
        self.current = snapshot
        self.files = files
        self.last_error: ConfigError | None = None
        self._default_route = default_route
        self.on_reload = on_reload
        self._seen = _mtimes(files.all()) if files else ()
        self._watcher: Periodic | None = None

    @classmethod
    def from_files(cls, files: ConfigFiles, *, default_route: str | None = None,
                   prices: PriceBook | None = None) -> PolicySource:
        """Load once; raise ConfigError if the files are invalid at start-up."""
        return cls(load_snapshot(files, default_route=default_route, prices=prices),
                   files, default_route=default_route)

    def reload(self) -> ReloadResult:
        """Validate the files now; swap the snapshot only if they are all good."""
        if self.files is None:
            return ReloadResult(ok=True, changed=False, version=self.current.version)
        seen = _mtimes(self.files.all())
        try:
            snapshot = load_snapshot(self.files, default_route=self._default_route,
                                     prices=self.current.prices, version=self.current.version + 1)
        except ConfigError as exc:
            self._seen = seen
            self.last_error = exc
            log.error("policy reload rejected, still serving version %d:\n%s", self.current.version, exc)
            result = ReloadResult(ok=False, changed=False, version=self.current.version, error=exc)
        else:
            self._seen = seen
            self.current = snapshot
            self.last_error = None
            log.info("policy reloaded: version %d", snapshot.version)
            result = ReloadResult(ok=True, changed=True, version=snapshot.version)
        if self.on_reload is not None:
            self.on_reload(result)
        return result

    def changed_on_disk(self) -> bool:
        return self.files is not None and _mtimes(self.files.all()) != self._seen

    def start_watching(self, interval_s: float) -> None:
        """Poll the files' modification times every `interval_s` seconds."""
        if self.files is None or interval_s <= 0 or self._watcher is not None:
            return
        self._watcher = Periodic(interval_s, self._check, name="router-policy-reload")
        self._watcher.start()

    async def _check(self) -> None:
        if self.changed_on_disk():
            self.reload()

    async def aclose(self) -> None:
        if self._watcher is not None:
            await self._watcher.aclose()
            self._watcher = None
