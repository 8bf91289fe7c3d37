"""Read ops-written YAML safely and turn every problem into a `ConfigIssue`.

YAML is read with PyYAML's safe loader only (no tags that build objects), with
duplicate keys rejected, and the line of every node remembered so that a
validation error can say where in the file it is.

>>> from router.schema import DeploymentsFile
>>> load_model("config/deployments.yaml", DeploymentsFile)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from router.errors import ConfigError, ConfigIssue

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class _StrictSafeLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys and reads booleans as YAML 1.2 does.

    YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, so `retry: {on: [...]}`
    would silently become `{True: [...]}`; only `true` and `false` are booleans here.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_StrictSafeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictSafeLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: _StrictSafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_StrictSafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _line_map(node: yaml.Node | None, loc: Loc = (), out: dict[Loc, int] | None = None) -> dict[Loc, int]:
    """Map each field path in the document to its 1-based line."""
    out = {} if out is None else out
    if node is None:
        return out
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*loc, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*loc, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*loc, i), out)
    return out


def load_yaml(path: Path | str) -> tuple[Any, dict[Loc, int]]:
    """Parse one YAML file; return the data and a field-path -> line map."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"cannot read: {exc.strerror}")]) from exc
    loader = _StrictSafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError([ConfigIssue(str(path), "", f"invalid YAML: {problem}", line)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    return data, _line_map(node)


def format_loc(loc: Loc) -> str:
    """`("routes", "default", "targets", 0)` -> `routes.default.targets[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def nearest_line(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of `loc`, or of its closest ancestor present in the file."""
    while True:
        if loc in lines:
            return lines[loc]
        if not loc:
            return None
        loc = loc[:-1]


def issues_from_validation(path: str, exc: ValidationError, lines: dict[Loc, int]) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False, include_input=False):
        # pydantic appends validator names ("function-after[...]") to locs; drop them
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        msg = err["msg"].removeprefix("Value error, ")
        issues.append(ConfigIssue(path, format_loc(loc), msg, nearest_line(lines, loc)))
    return issues


def load_model(path: Path | str, model: type[M]) -> tuple[M, dict[Loc, int]]:
    """Load and validate one file against `model`; raise ConfigError naming file, line, field."""
    data, lines = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(str(path), "", "top level must be a mapping", 1)])
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        raise ConfigError(issues_from_validation(str(path), exc, lines)) from exc
