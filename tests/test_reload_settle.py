"""A live reload reads files only once they have settled, and never on the event loop.

The settle wait is an injected sleep: here it plays the part of a writer still
appending to the file, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from router.errors import ConfigError
from router.policy import reload as reload_module
from router.policy.reload import ConfigFiles, PolicySource, ReloadResult
from router.policy.snapshot import Snapshot

pytestmark = pytest.mark.timeout(30)

DEPLOYMENTS = """\
deployments:
  - {name: a, model: openai/a}
  - {name: b, model: openai/b}
"""

# Cut after the first route, the policy is still valid: only the settle check keeps it out.
FIRST_HALF = """\
routes:
  default: {targets: [a]}
"""
SECOND_HALF = """\
  premium: {targets: [b], fallbacks: [default]}
"""


def config(tmp_path: Path, policy: str = FIRST_HALF + SECOND_HALF) -> ConfigFiles:
    (tmp_path / "deployments.yaml").write_text(DEPLOYMENTS)
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "main.yaml").write_text(policy)
    return ConfigFiles(deployments=tmp_path / "deployments.yaml", policies=(), policy_dir=tmp_path / "policies")


class FakeSleep:
    """Records settle waits and runs `during` (a writer's next step) inside one."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.during: Callable[[], object] | None = None

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.during is not None:
            step, self.during = self.during, None
            step()


def seen(results: list[ReloadResult]) -> Callable[[ReloadResult], None]:
    return results.append


async def test_a_growing_file_is_not_loaded_until_it_settles(tmp_path: Path) -> None:
    sleep = FakeSleep()
    files = config(tmp_path)
    heard: list[ReloadResult] = []
    src = PolicySource(PolicySource.from_files(files).current, files, on_reload=seen(heard), sleep=sleep)
    policy = tmp_path / "policies" / "main.yaml"
    policy.write_text(FIRST_HALF)  # the writer has flushed half of the new file...
    sleep.during = lambda: policy.write_text(FIRST_HALF + SECOND_HALF.replace("[b]", "[a, b]"))  # ...then the rest

    first = await src.areload()
    assert first.deferred and not first.changed and first.error is None
    assert src.current.version == 0 and src.last_error is None and heard == []
    assert sleep.waits == [files.settle_s]
    assert src.changed_on_disk()  # so the watcher's next poll tries again

    second = await src.areload()  # nothing is writing now
    assert second.ok and second.changed and not second.deferred
    assert src.current.version == 1 and [r.changed for r in heard] == [True]
    assert [d.name for d in src.current.routes["premium"].candidates] == ["a", "b"]
    assert not src.changed_on_disk()


async def test_a_same_size_rewrite_is_seen_by_its_mtime(tmp_path: Path) -> None:
    sleep = FakeSleep()
    files = config(tmp_path)
    src = PolicySource(PolicySource.from_files(files).current, files, sleep=sleep)
    policy = tmp_path / "policies" / "main.yaml"
    info = policy.stat()

    def touch() -> None:  # same bytes, one nanosecond later: only the mtime tells
        os.utime(policy, ns=(info.st_atime_ns, info.st_mtime_ns + 1))

    sleep.during = touch
    assert (await src.areload()).deferred
    assert (await src.areload()).changed


async def test_a_new_file_appearing_during_the_wait_defers(tmp_path: Path) -> None:
    sleep = FakeSleep()
    files = config(tmp_path)
    src = PolicySource(PolicySource.from_files(files).current, files, sleep=sleep)
    sleep.during = lambda: (tmp_path / "policies" / "extra.yaml").write_text("routes:\n  extra: {targets: [b]}\n")
    assert (await src.areload()).deferred
    result = await src.areload()
    assert result.changed and "extra" in src.current.routes


async def test_a_file_changed_while_it_is_parsed_is_discarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = config(tmp_path)
    src = PolicySource(PolicySource.from_files(files).current, files, sleep=FakeSleep())
    policy = tmp_path / "policies" / "main.yaml"
    real_load = reload_module.load_snapshot
    writes = [FIRST_HALF + SECOND_HALF + "  late: {targets: [a]}\n"]

    def load_then_write(f: ConfigFiles, **kwargs: object) -> Snapshot:
        snap = real_load(f, **kwargs)  # type: ignore[arg-type]
        if writes:  # the writer appends after the parse read the file and before the swap
            policy.write_text(writes.pop())
        return snap

    monkeypatch.setattr(reload_module, "load_snapshot", load_then_write)
    assert (await src.areload()).deferred and src.current.version == 0
    assert (await src.areload()).changed and "late" in src.current.routes


async def test_files_are_read_and_parsed_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = config(tmp_path)
    src = PolicySource(PolicySource.from_files(files).current, files, sleep=FakeSleep())
    real_load = reload_module.load_snapshot
    threads: list[int] = []

    def recording(f: ConfigFiles, **kwargs: object) -> Snapshot:
        threads.append(threading.get_ident())
        return real_load(f, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reload_module, "load_snapshot", recording)
    assert (await src.areload()).changed
    assert threads and threading.get_ident() not in threads


async def test_an_invalid_edit_keeps_the_last_good_snapshot(tmp_path: Path) -> None:
    files = config(tmp_path)
    heard: list[ReloadResult] = []
    src = PolicySource(PolicySource.from_files(files).current, files, on_reload=seen(heard), sleep=FakeSleep())
    good = src.current
    (tmp_path / "policies" / "main.yaml").write_text("routes: {default: {targets: [ghost]}}\n")
    result = await src.areload()
    assert not result.ok and not result.deferred and isinstance(result.error, ConfigError)
    assert "main.yaml" in str(result.error) and "ghost" in str(result.error)
    assert src.current is good and src.last_error is result.error and heard == [result]
    assert not src.changed_on_disk()  # a rejected edit is not retried until the file changes again


async def test_concurrent_reloads_take_turns(tmp_path: Path) -> None:
    files = config(tmp_path)
    src = PolicySource(PolicySource.from_files(files).current, files, sleep=FakeSleep())
    results = await asyncio.gather(src.areload(), src.areload(), src.areload())
    assert sorted(r.version for r in results) == [1, 2, 3]
    assert src.current.version == 3


async def test_the_blocking_reload_still_works_for_scripts(tmp_path: Path) -> None:
    files = config(tmp_path)
    src = PolicySource.from_files(files)
    (tmp_path / "policies" / "main.yaml").write_text(FIRST_HALF)
    result = src.reload()
    assert result.changed and set(src.current.routes) == {"default"}
