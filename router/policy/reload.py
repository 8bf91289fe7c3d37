"""Load the configuration files into a snapshot, and reload them live.

The router serves from `PolicySource.current`, an immutable `Snapshot`. A
reload validates every file anew and swaps the reference only when all of
them are good; in-flight requests keep the snapshot they started with, and an
invalid edit leaves the last good snapshot serving while `last_error` says
what is wrong.

Live reloads (`PolicySource.areload()` and the polling watcher) never read or
parse on the event loop: stat, read, parse and compile all run in a worker
thread (`asyncio.to_thread`), and the files' `YamlLimits` bound how long that
can take. A file is read only once it has settled: its size and mtime (ns)
must be the same before and after a short wait (`ConfigFiles.settle_s`) and
again after the parse, so a file caught half-written (by an editor, `cp`, a
config-management agent writing in place) is not loaded even if the half
happens to be valid; the reload is deferred and the watcher tries again on its
next poll.

>>> files = ConfigFiles(Path("config/deployments.yaml"), (), policy_dir=Path("policies"))
>>> source = PolicySource.from_files(files)  # doctest: +SKIP
>>> source.current.default_route  # doctest: +SKIP
'default'
>>> await source.areload()  # doctest: +SKIP
ReloadResult(ok=True, changed=True, version=1, error=None, deferred=False)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from router.errors import ConfigError, ConfigIssue
from router.periodic import Periodic
from router.policy.loader import DEFAULT_LIMITS, YamlLimits, load_model
from router.policy.snapshot import Snapshot, compile_snapshot
from router.pricing import PriceBook
from router.quota.config import TenantsFile
from router.schema import DeploymentsFile, PolicyFile

log = logging.getLogger("router.policy")

#: (path, size in bytes, mtime in ns) per file; -1, -1 for a file that is missing.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload did.

    `changed`: a new snapshot now serves. `ok` is False when the files were
    rejected (`error` says why; the old snapshot keeps serving) or, with
    `deferred`, when they were still being written and nothing was read: the
    watcher retries on its next poll, and `last_error` is left as it was.
    """

    ok: bool
    changed: bool
    version: int
    error: ConfigError | None = None
    deferred: bool = False


@dataclass(frozen=True, slots=True)
class ConfigFiles:
    """The files a snapshot is built from, and the bounds on reading them."""

    deployments: Path
    policies: tuple[Path, ...]
    tenants: Path | None = None
    policy_dir: Path | None = None
    #: File names in `policy_dir` that are not loaded (the demo's own policy lives there).
    exclude: frozenset[str] = frozenset()
    #: Size and expanded-node caps per file (settings `policy_max_file_bytes`, `policy_max_yaml_nodes`).
    limits: YamlLimits = DEFAULT_LIMITS
    #: Seconds sizes and mtimes must stay unchanged before a live reload reads the files (`policy_settle_s`).
    settle_s: float = 0.1

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
    """Validate every file and compile them; one ConfigError lists all problems.

    Blocking (reads and parses every file, each bounded by `files.limits`):
    call it from a worker thread when an event loop is serving.
    """
    issues: list[ConfigIssue] = []
    deployments: DeploymentsFile | None = None
    policies: list[tuple[str, PolicyFile]] = []
    tenants: TenantsFile | None = None
    try:
        deployments, _ = load_model(files.deployments, DeploymentsFile, files.limits)
    except ConfigError as exc:
        issues.extend(exc.issues)
    policy_paths = files.current_policies()
    if not policy_paths:
        issues.append(ConfigIssue(str(files.policy_dir or "policies"), "", "no policy files found"))
    for path in policy_paths:
        try:
            policies.append((str(path), load_model(path, PolicyFile, files.limits)[0]))
        except ConfigError as exc:
            issues.extend(exc.issues)
    if files.tenants is not None and files.tenants.exists():
        try:
            tenants, _ = load_model(files.tenants, TenantsFile, files.limits)
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues or deployments is None:
        raise ConfigError(issues)
    return compile_snapshot(
        deployments.deployments, str(files.deployments), policies,
        tenants=tenants, tenants_file=str(files.tenants), default_route=default_route, prices=prices, version=version,
    )


def fingerprint(files: ConfigFiles) -> Fingerprint:
    """Size and mtime (ns) of every file `files` names now (blocking: lists the policy dir, stats each file)."""
    out = []
    for p in files.all():
        try:
            info = p.stat()
        except OSError:
            out.append((str(p), -1, -1))
        else:
            out.append((str(p), info.st_size, info.st_mtime_ns))
    return tuple(out)


class PolicySource:
    """Holds the serving snapshot and replaces it when the files change.

    `sleep` is awaited for the settle wait (tests pass a fake one);
    `on_reload` hears every reload that read the files (not deferred ones).
    """

    def __init__(
        self,
        snapshot: Snapshot,
        files: ConfigFiles | None = None,
        *,
        default_route: str | None = None,
        on_reload: Callable[[ReloadResult], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.current = snapshot
        self.files = files
        self.last_error: ConfigError | None = None
        self._default_route = default_route
        self.on_reload = on_reload
        self.sleep = sleep
        self._seen = fingerprint(files) if files else ()
        self._watcher: Periodic | None = None
        self._lock = asyncio.Lock()  # one live reload at a time, so versions go up by one

    @classmethod
    def from_files(cls, files: ConfigFiles, *, default_route: str | None = None,
                   prices: PriceBook | None = None) -> PolicySource:
        """Load once, blocking; raise ConfigError if the files are invalid at start-up."""
        return cls(load_snapshot(files, default_route=default_route, prices=prices),
                   files, default_route=default_route)

    async def areload(self) -> ReloadResult:
        """Re-read the files off the event loop; swap the snapshot only if they are all good.

        Waits `files.settle_s` between two fingerprints, then reads, parses and
        compiles in a worker thread while the current snapshot keeps serving.
        Returns `deferred=True` without reading (or discards what it read)
        when any file changed meanwhile. Never raises ConfigError: a rejected
        edit is in the result and in `last_error`.
        """
        files = self.files
        if files is None:
            return ReloadResult(ok=True, changed=False, version=self.current.version)
        async with self._lock:
            before = await asyncio.to_thread(fingerprint, files)
            await self.sleep(files.settle_s)
            settled = await asyncio.to_thread(fingerprint, files)
            if settled != before:
                return self._deferred()
            base = self.current
            try:
                built: Snapshot | ConfigError = await asyncio.to_thread(self._build, files, base)
            except ConfigError as exc:
                built = exc
            # a file written during the parse may have been read half-written, valid or not
            if await asyncio.to_thread(fingerprint, files) != settled or self.current is not base:
                return self._deferred()
            return self._finish(built, settled)

    def reload(self) -> ReloadResult:
        """Re-read the files now, blocking the caller; swap the snapshot only if they are all good.

        For scripts and the CLI: it does not wait for the files to settle (it
        cannot sleep without blocking), though a file that changes during the
        read still defers. Code on a serving event loop awaits `areload()`.
        """
        files = self.files
        if files is None:
            return ReloadResult(ok=True, changed=False, version=self.current.version)
        seen = fingerprint(files)
        try:
            built: Snapshot | ConfigError = self._build(files, self.current)
        except ConfigError as exc:
            built = exc
        if fingerprint(files) != seen:
            return self._deferred()
        return self._finish(built, seen)

    def _build(self, files: ConfigFiles, base: Snapshot) -> Snapshot:
        return load_snapshot(files, default_route=self._default_route, prices=base.prices, version=base.version + 1)

    def _deferred(self) -> ReloadResult:
        log.info("policy files still changing; not loaded, version %d keeps serving", self.current.version)
        return ReloadResult(ok=False, changed=False, version=self.current.version, deferred=True)

    def _finish(self, built: Snapshot | ConfigError, seen: Fingerprint) -> ReloadResult:
        self._seen = seen
        if isinstance(built, ConfigError):
            self.last_error = built
            log.error("policy reload rejected, still serving version %d:\n%s", self.current.version, built)
            result = ReloadResult(ok=False, changed=False, version=self.current.version, error=built)
        else:
            self.current = built
            self.last_error = None
            log.info("policy reloaded: version %d", built.version)
            result = ReloadResult(ok=True, changed=True, version=built.version)
        if self.on_reload is not None:
            self.on_reload(result)
        return result

    def changed_on_disk(self) -> bool:
        """Whether any file's size or mtime differs from the last reload's (blocking: stats the files)."""
        return self.files is not None and fingerprint(self.files) != self._seen

    def start_watching(self, interval_s: float) -> None:
        """Poll the files' sizes and mtimes every `interval_s` seconds; reload with `areload()` on a change."""
        if self.files is None or interval_s <= 0 or self._watcher is not None:
            return
        self._watcher = Periodic(interval_s, self._check, name="router-policy-reload")
        self._watcher.start()

    async def _check(self) -> None:
        # A deferred reload leaves `_seen` as it was, so the next poll sees the change again.
        if await asyncio.to_thread(self.changed_on_disk):
            await self.areload()

    async def aclose(self) -> None:
        if self._watcher is not None:
            await self._watcher.aclose()
            self._watcher = None
