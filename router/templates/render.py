"""Loaded prompts and rendering: `TemplateSet.render` turns a prompt and variables into chat messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from jinja2 import TemplateError
from jinja2.environment import Template
from jinja2.exceptions import SecurityError

from router.errors import InvalidRequest
from router.templates.sandbox import MAX_OUTPUT_CHARS, MissingVariable, PromptSandbox
from router.templates.schema import PromptTemplate

_MAX_DEPTH = 32


class PromptRenderError(InvalidRequest):
    """A prompt could not be rendered with the variables given: the caller's request is wrong.

    `field` names what is wrong (`variables.topic`, `name`, `version`,
    `messages[1].content`); `line` is the line in the prompt file, if known.
    """

    kind = "invalid_request"

    def __init__(self, message: str, *, prompt: str, version: str | None, field: str,
                 file: str | None = None, line: int | None = None) -> None:
        self.prompt = prompt
        self.version = version
        self.file = file
        self.line = line
        where = f" ({file}:{line})" if file and line else (f" ({file})" if file else "")
        label = f"{prompt!r} version {version!r}" if version else repr(prompt)
        super().__init__(f"prompt {label}{where} [{field}]: {message}")
        self.field = field  # after the base, which would prefix the message with it


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    """One message of a loaded prompt: its compiled template and where its content starts in the file."""

    role: str
    name: str | None
    template: Template
    filename: str  # Jinja's name for it, so tracebacks can be matched
    first_line: int | None  # file line of the content's first line


@dataclass(frozen=True, slots=True)
class CompiledPrompt:
    """One loaded prompt version: its spec, where it came from, its compiled messages."""

    spec: PromptTemplate
    file: str
    messages: tuple[CompiledMessage, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A rendered prompt: OpenAI chat message dicts plus the prompt's request defaults."""

    name: str
    version: str
    messages: list[dict[str, object]]
    route: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    response_format: dict[str, Any] | None = None

    def params(self) -> dict[str, Any]:
        """The defaults that are set, as keyword arguments for `Router.chat`."""
        names = ("route", "model", "max_tokens", "temperature", "response_format")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: "10" after "9", "2.1" after "2"."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|\D+", version))


class TemplateSet:
    """Every prompt version loaded from one directory; immutable once built."""

    def __init__(self, prompts: Mapping[str, Mapping[str, CompiledPrompt]], *, version: int = 0,
                 sandbox: PromptSandbox | None = None) -> None:
        self._prompts = {n: dict(v) for n, v in prompts.items()}
        self.version = version
        self._env = sandbox or PromptSandbox(MAX_OUTPUT_CHARS)

    def names(self) -> list[str]:
        return sorted(self._prompts)

    def versions(self, name: str) -> list[str]:
        """The versions of `name`, oldest first (natural order); the last is the default."""
        return sorted(self._prompts.get(name, {}), key=_version_key)

    def __contains__(self, name: object) -> bool:
        return name in self._prompts

    def get(self, name: str, version: str | None = None) -> CompiledPrompt:
        """The prompt `name` at `version` (default: its highest version); PromptRenderError if unknown."""
        versions = self._prompts.get(name)
        if not versions:
            raise PromptRenderError(f"no such prompt (known: {', '.join(self.names()) or 'none'})",
                                    prompt=name, version=version, field="name")
        chosen = version if version is not None else self.versions(name)[-1]
        if chosen not in versions:
            raise PromptRenderError(f"no such version (known: {', '.join(self.versions(name))})",
                                    prompt=name, version=version, field="version")
        return versions[chosen]

    def render(self, name: str, variables: Mapping[str, object], *, version: str | None = None) -> RenderedPrompt:
        """Render prompt `name` with `variables` into chat messages.

        Raises `PromptRenderError` (an `InvalidRequest`) naming the field:
        unknown name or version, a variable missing (with the file line that
        uses it) or not JSON-like data, or a sandbox limit hit.
        """
        prompt = self.get(name, version)
        spec = prompt.spec
        data = {key: _plain(value, f"variables.{key}", spec) for key, value in variables.items()}
        messages: list[dict[str, object]] = []
        for i, message in enumerate(prompt.messages):
            content = self._render_one(prompt, i, message, data)
            out: dict[str, object] = {"role": message.role, "content": content}
            if message.name is not None:
                out["name"] = message.name
            messages.append(out)
        d = spec.defaults
        return RenderedPrompt(spec.name, spec.version, messages, d.route, d.model, d.max_tokens,
                              d.temperature, d.response_format)

    def _render_one(self, prompt: CompiledPrompt, index: int, message: CompiledMessage,
                    data: dict[str, object]) -> str:
        parts: list[str] = []
        size = 0
        try:
            for chunk in message.template.generate(data):
                size += len(chunk)
                if size > self._env.max_output_chars:
                    raise SecurityError(f"rendered message exceeds {self._env.max_output_chars} characters")
                parts.append(chunk)
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as exc:
            line = _template_line(exc.__traceback__, message)
            field_name = f"messages[{index}].content"
            if isinstance(exc, MissingVariable) and exc.name is not None:
                field_name = f"variables.{exc.name}"
                text = f"variable {exc.name!r} is missing (used in messages[{index}])"
            else:
                text = str(exc) if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
            raise PromptRenderError(text, prompt=prompt.spec.name, version=prompt.spec.version,
                                    field=field_name, file=prompt.file, line=line) from exc
        return "".join(parts)


def _template_line(tb: TracebackType | None, message: CompiledMessage) -> int | None:
    line = None
    while tb is not None:  # Jinja rewrites frames to the template's own file name and line
        if tb.tb_frame.f_code.co_filename == message.filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None or message.first_line is None:
        return message.first_line
    return message.first_line + line - 1


def _plain(value: object, where: str, spec: PromptTemplate, depth: int = 0) -> object:
    """A copy of `value` made only of JSON-like data, or PromptRenderError naming where it is not."""
    if depth > _MAX_DEPTH:
        raise PromptRenderError("nested too deeply", prompt=spec.name, version=spec.version, field=where)
    if value is None or isinstance(value, bool):
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]", spec, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}.{k}", spec, depth + 1) for k, v in value.items()}
    raise PromptRenderError(f"must be JSON-like data (str, number, bool, None, list, str-keyed mapping), "
                            f"not {type(value).__name__}", prompt=spec.name, version=spec.version, field=where)
