"""Live reload of a prompt directory: serve the last good `TemplateSet`, swap in only a valid edit."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from router.errors import ConfigError
from router.periodic import Periodic
from router.templates.load import MAX_FILE_BYTES, load_templates, prompt_files
from router.templates.sandbox import MAX_OUTPUT_CHARS

# The name the module had before it became a package: log configuration keyed on it keeps working.
log = logging.getLogger("router.templates")


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p in prompt_files(directory):
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(p), -1, -1))
    return tuple(out)


class TemplateSource:
    """Serves the last good `TemplateSet` of a directory; `reload()` swaps in a valid edit only.

    Mirrors `router.policy.reload.PolicySource`: an invalid edit is logged and
    kept in `last_error` while `current` keeps serving the previous set.
    Construction loads once and raises `ConfigError` if the files are invalid.

    >>> source = TemplateSource(Path("policies/prompts"))  # doctest: +SKIP
    >>> source.start_watching(2.0)  # doctest: +SKIP
    >>> source.current.render("summarise", {...})  # doctest: +SKIP
    """

    def __init__(self, directory: Path, *, max_file_bytes: int = MAX_FILE_BYTES,
                 max_output_chars: int = MAX_OUTPUT_CHARS) -> None:
        self.directory = directory
        self._limits = {"max_file_bytes": max_file_bytes, "max_output_chars": max_output_chars}
        self._seen = _fingerprint(directory) if directory.is_dir() else ()
        self.current = load_templates(directory, **self._limits)
        self.last_error: ConfigError | None = None
        self._watcher: Periodic | None = None

    def reload(self) -> bool:
        """Re-read the directory; True when a new set now serves, False when the edit was rejected."""
        self._seen = _fingerprint(self.directory) if self.directory.is_dir() else ()
        try:
            loaded = load_templates(self.directory, version=self.current.version + 1, **self._limits)
        except ConfigError as exc:
            self.last_error = exc
            log.error("prompt reload rejected, still serving version %d:\n%s", self.current.version, exc)
            return False
        self.current, self.last_error = loaded, None
        log.info("prompts reloaded: version %d", loaded.version)
        return True

    def changed_on_disk(self) -> bool:
        return (_fingerprint(self.directory) if self.directory.is_dir() else ()) != self._seen

    def start_watching(self, interval_s: float) -> None:
        """Reload every `interval_s` seconds when a file was added, removed or modified."""
        if interval_s > 0 and self._watcher is None:
            self._watcher = Periodic(interval_s, self._check, name="router-prompt-reload")
            self._watcher.start()

    async def _check(self) -> None:
        if self.changed_on_disk():
            await asyncio.to_thread(self.reload)  # parsing and compiling stay off the serving loop

    async def aclose(self) -> None:
        if self._watcher is not None:
            await self._watcher.aclose()
            self._watcher = None
