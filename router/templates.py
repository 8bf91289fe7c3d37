"""Prompt templates that ops edit in YAML, rendered in a Jinja2 sandbox, reloaded live.

A file in `policies/prompts/` holds a list of named, versioned prompts; each is
a list of chat messages whose `content` is a Jinja2 template:

```yaml
prompts:
  - name: summarise
    version: "2"
    variables: [text, audience]          # optional; when given it must match what the messages use
    defaults: {route: default, max_tokens: 300, temperature: 0.2}
    messages:
      - role: system
        content: You summarise text for {{ audience }}.
      - role: user
        content: |
          Summarise:
          {{ text }}
```

Templates are data, not code. They render in `ImmutableSandboxedEnvironment`
with `StrictUndefined`, no autoescaping, no loader (no include/import/extends),
no macros, no globals but a capped `range`, and an allow-list of filters.
Attribute access is refused: `x.y`, `x.__class__`, `cycler.__init__` are
rejected at load with file and line (look data up as `x["y"]`); only the
for-loop's counters (`loop.index`, `loop.first`, ...) may be read. At render,
variables must be JSON-like data (str, numbers, bools, None, lists, str-keyed
mappings); a dynamic `x[k]` on anything but a mapping or a sequence with an
int, `range` over 1000 items, `**`, `*` and `+` that would build huge values,
`%` on strings and output over `max_output_chars` raise `PromptRenderError`.
What this does not bound: a template author who chains `{% set %}` with `~` to
double a string forty times. Templates are ops-written; variables, which come
from callers, can never do that.

>>> prompts = load_templates(Path("policies/prompts"))  # doctest: +SKIP
>>> p = prompts.render("summarise", {"text": "...", "audience": "engineers"})  # doctest: +SKIP
>>> await router.chat(p.messages, **p.params())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import yaml
from jinja2 import Environment, StrictUndefined, TemplateError, TemplateRuntimeError, TemplateSyntaxError, meta, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from pydantic import BaseModel, ConfigDict, Field, field_validator

from router.errors import ConfigError, ConfigIssue, InvalidRequest
from router.periodic import Periodic
from router.policy.loader import format_loc, load_model, nearest_line

log = logging.getLogger("router.templates")

PromptRole = Literal["system", "developer", "user", "assistant"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
#: Largest prompt file read (bytes); a bigger one is refused before parsing.
MAX_FILE_BYTES = 256 * 1024
#: Largest rendered message (characters).
MAX_OUTPUT_CHARS = 200_000
_MAX_RANGE = 1000
_MAX_DEPTH = 32


class PromptDefaults(BaseModel):
    """Request parameters a prompt suggests; the caller's own arguments win."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    route: str | None = None
    model: str | None = Field(default=None, description="a model alias of the policy")
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _known_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") not in ("text", "json_object", "json_schema"):
            raise ValueError("type must be text, json_object or json_schema")
        return value


class PromptMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: PromptRole
    content: str = Field(description="a Jinja2 template")
    name: str | None = None


class PromptTemplate(BaseModel):
    """One version of one prompt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME, max_length=128)
    version: str = Field(default="1", pattern=_NAME, max_length=64)
    description: str = ""
    variables: tuple[str, ...] | None = None
    defaults: PromptDefaults = PromptDefaults()
    messages: tuple[PromptMessage, ...] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _number_is_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("variables")
    @classmethod
    def _identifiers(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        bad = [v for v in value or () if not v.isidentifier() or v.startswith("_")]
        if bad:
            raise ValueError(f"not variable names: {', '.join(bad)}")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a variable is listed twice")
        return value


class PromptsFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompts: tuple[PromptTemplate, ...] = ()


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


class _MissingVariable(UndefinedError):
    def __init__(self, message: str | None = None, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class _Undefined(StrictUndefined):
    """StrictUndefined whose error says which top-level variable was missing."""

    __slots__ = ()

    def __init__(self, hint: str | None = None, obj: Any = missing, name: str | None = None,
                 exc: type[TemplateRuntimeError] = UndefinedError) -> None:
        super().__init__(hint, obj, name, exc)
        # Jinja raises `self._undefined_exception(message)`; bind the name so the error can say which variable
        self._undefined_exception = partial(  # type: ignore[assignment]
            _MissingVariable, name=name if obj is missing else None)


def _capped_range(*args: int) -> range:
    values = range(*args)
    if len(values) > _MAX_RANGE:
        raise SecurityError(f"range() is limited to {_MAX_RANGE} items in prompts")
    return values


_JINJA_FILTERS = Environment().filters


def _indent(value: str, width: int = 4, first: bool = False, blank: bool = False) -> str:
    if width > 32:
        raise SecurityError("indent width is limited to 32 in prompts")
    return str(_JINJA_FILTERS["indent"](value, width, first, blank))


def _tojson(value: object, indent: int | None = None) -> str:
    """JSON as a model should read it: not HTML-escaped (Jinja's own tojson escapes `<`, `>`, `&`)."""
    if indent is not None and indent > 8:
        raise SecurityError("tojson indent is limited to 8 in prompts")
    return json.dumps(value, ensure_ascii=False, indent=indent)


_SAFE_FILTERS = (
    "abs", "capitalize", "count", "d", "default", "dictsort", "first", "float", "int", "items", "join", "last",
    "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "select",
    "selectattr", "sort", "string", "sum", "title", "trim", "truncate", "unique", "upper", "wordcount",
)


def _result_len(operator: str, left: object, right: object) -> int:
    """Length of the str/list that `left <op> right` would build (0 when it builds none)."""
    seq = (str, list, tuple)
    if operator == "*" and isinstance(left, seq) and isinstance(right, int):
        return len(left) * right
    if operator == "*" and isinstance(right, seq) and isinstance(left, int):
        return len(right) * left
    if operator == "+" and isinstance(left, seq) and isinstance(right, seq):
        return len(left) + len(right)
    return 0


class _PromptSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, narrowed to data: no attributes, bounded operators."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, max_output_chars: int) -> None:
        # trim/lstrip blocks: a `{% for %}` on its own line leaves no blank line in the prompt
        super().__init__(undefined=_Undefined, autoescape=False, keep_trailing_newline=True,
                         trim_blocks=True, lstrip_blocks=True)
        self.max_output_chars = max_output_chars
        self.globals = {"range": _capped_range}
        self.filters = {name: _JINJA_FILTERS[name] for name in _SAFE_FILTERS}
        self.filters.update(indent=_indent, tojson=_tojson)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, LoopContext) and attribute in _LOOP_FIELDS:
            return getattr(obj, attribute)
        raise SecurityError(f"attribute access ({attribute!r}) is not allowed in prompts")

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Mapping):
            if argument in obj:
                return obj[argument]
            return self.undefined(f"key {argument!r} is missing from the data", obj=obj, name=str(argument))
        if isinstance(obj, list | tuple | str) and isinstance(argument, int | slice) and not isinstance(argument, bool):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(f"index {argument!r} is out of range", obj=obj, name=str(argument))
        raise SecurityError(f"cannot look up {argument!r} in a {type(obj).__name__}: only data lookups are allowed")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("% formatting is not allowed in prompts")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right * left.bit_length() > 4096:
            raise SecurityError("** result too large")
        if _result_len(operator, left, right) > self.max_output_chars:
            raise SecurityError(f"{operator} would build a value over {self.max_output_chars} characters")
        return super().call_binop(context, operator, left, right)


@dataclass(frozen=True, slots=True)
class _CompiledMessage:
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
    messages: tuple[_CompiledMessage, ...] = field(repr=False)


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
                 sandbox: _PromptSandbox | None = None) -> None:
        self._prompts = {n: dict(v) for n, v in prompts.items()}
        self.version = version
        self._env = sandbox or _PromptSandbox(MAX_OUTPUT_CHARS)

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

    def _render_one(self, prompt: CompiledPrompt, index: int, message: _CompiledMessage,
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
            if isinstance(exc, _MissingVariable) and exc.name is not None:
                field_name = f"variables.{exc.name}"
                text = f"variable {exc.name!r} is missing (used in messages[{index}])"
            else:
                text = str(exc) if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
            raise PromptRenderError(text, prompt=prompt.spec.name, version=prompt.spec.version,
                                    field=field_name, file=prompt.file, line=line) from exc
        return "".join(parts)


def _template_line(tb: TracebackType | None, message: _CompiledMessage) -> int | None:
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


#: `loop.index` and friends: plain values of the for-loop's counter, the one attribute read allowed.
_LOOP_FIELDS = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0",
                          "previtem", "nextitem"})


def _is_loop_field(node: nodes.Getattr) -> bool:
    return isinstance(node.node, nodes.Name) and node.node.name == "loop" and node.attr in _LOOP_FIELDS


_BANNED: dict[type[nodes.Node], str] = {
    nodes.Macro: "macros", nodes.CallBlock: "call blocks", nodes.Extends: "extends",
    nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "import",
}


def _forbidden(tree: nodes.Template) -> list[tuple[str, int]]:
    """Constructs a prompt may not use: (what, template line)."""
    found: list[tuple[str, int]] = []
    for node in tree.find_all(nodes.Node):
        if isinstance(node, nodes.Getattr) and not _is_loop_field(node):
            found.append((f"attribute access '.{node.attr}' (look data up as x[\"{node.attr}\"])", node.lineno))
        elif isinstance(node, nodes.Const):
            if isinstance(node.value, str) and node.value.startswith("_"):
                found.append((f"names starting with '_' ({node.value!r})", node.lineno))
        elif type(node) in _BANNED:
            found.append((_BANNED[type(node)], node.lineno))
    return found


def _content_lines(path: Path) -> dict[tuple[str | int, ...], int]:
    """File line where each message's content text starts (block scalars start on the next line)."""
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    out: dict[tuple[str | int, ...], int] = {}
    prompts = next((v for k, v in getattr(root, "value", []) if k.value == "prompts"), None)
    for i, prompt in enumerate(getattr(prompts, "value", [])):
        msgs = next((v for k, v in getattr(prompt, "value", []) if k.value == "messages"), None)
        for j, msg in enumerate(getattr(msgs, "value", [])):
            for key, value in getattr(msg, "value", []):
                if key.value == "content" and isinstance(value, yaml.ScalarNode):
                    out[("prompts", i, "messages", j)] = value.start_mark.line + 1 + (value.style in ("|", ">"))
    return out


def _file_line(first: int | None, template_line: int | None) -> int | None:
    return first + template_line - 1 if first and template_line else first


def _compile_file(path: Path, env: _PromptSandbox, issues: list[ConfigIssue]) -> list[CompiledPrompt]:
    parsed, lines = load_model(path, PromptsFile)
    starts = _content_lines(path)
    compiled: list[CompiledPrompt] = []
    for i, spec in enumerate(parsed.prompts):
        used: set[str] = set()
        messages: list[_CompiledMessage] = []
        before = len(issues)
        for j, msg in enumerate(spec.messages):
            loc = ("prompts", i, "messages", j, "content")
            first = starts.get(loc[:-1]) or nearest_line(lines, loc)
            filename = f"{path}#{spec.name}@{spec.version}/messages[{j}]"
            try:
                tree = env.parse(msg.content, filename=filename)
                bad = _forbidden(tree)
                issues += [ConfigIssue(str(path), format_loc(loc), f"not allowed in prompts: {what}",
                                       _file_line(first, n)) for what, n in bad]
                if bad:
                    continue
                used |= meta.find_undeclared_variables(tree) - set(env.globals)
                code = env.compile(msg.content, name=filename, filename=filename)
                template = env.template_class.from_code(env, code, env.make_globals(None))
            except TemplateSyntaxError as exc:
                issues.append(ConfigIssue(str(path), format_loc(loc), f"template error: {exc.message}",
                                          _file_line(first, exc.lineno)))
                continue
            messages.append(_CompiledMessage(msg.role, msg.name, template, filename, first))
        if spec.variables is not None and len(issues) == before:
            undeclared, unused = used - set(spec.variables), set(spec.variables) - used
            where = ("prompts", i, "variables")
            if undeclared:
                issues.append(ConfigIssue(str(path), format_loc(where), "used but not declared: "
                                          + ", ".join(sorted(undeclared)), nearest_line(lines, where)))
            if unused:
                issues.append(ConfigIssue(str(path), format_loc(where), "declared but not used: "
                                          + ", ".join(sorted(unused)), nearest_line(lines, where)))
        if len(issues) == before:
            compiled.append(CompiledPrompt(spec, str(path), tuple(messages)))
    return compiled


def prompt_files(directory: Path) -> list[Path]:
    """The prompt files in `directory` (`*.yaml`, `*.yml`), in name order."""
    return sorted(p for p in directory.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_templates(directory: Path, *, max_file_bytes: int = MAX_FILE_BYTES,
                   max_output_chars: int = MAX_OUTPUT_CHARS, version: int = 0) -> TemplateSet:
    """Load and validate every prompt file in `directory` (sync: file I/O; run it in a thread).

    Raises `ConfigError` listing every problem, each with file, field path and
    line: YAML or schema errors, template syntax errors, forbidden constructs,
    `variables:` that do not match the messages, a name+version defined twice,
    a file over `max_file_bytes`, a missing directory.
    """
    if not directory.is_dir():
        raise ConfigError([ConfigIssue(str(directory), "", "prompt directory not found")])
    env = _PromptSandbox(max_output_chars)
    issues: list[ConfigIssue] = []
    prompts: dict[str, dict[str, CompiledPrompt]] = {}
    for path in prompt_files(directory):
        if path.stat().st_size > max_file_bytes:
            issues.append(ConfigIssue(str(path), "", f"file larger than {max_file_bytes} bytes"))
            continue
        try:
            loaded = _compile_file(path, env, issues)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        for prompt in loaded:
            earlier = prompts.setdefault(prompt.spec.name, {}).get(prompt.spec.version)
            if earlier is not None:
                issues.append(ConfigIssue(prompt.file, "prompts", f"prompt {prompt.spec.name!r} version "
                                          f"{prompt.spec.version!r} is also defined in {earlier.file}"))
            prompts[prompt.spec.name][prompt.spec.version] = prompt
    if issues:
        raise ConfigError(issues)
    return TemplateSet(prompts, version=version, sandbox=env)


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
