"""Read ops-written YAML safely and turn every problem into a `ConfigIssue`.

YAML is read with PyYAML's safe rules only (no tags that build objects), with
duplicate keys rejected, only `true`/`false` as booleans, and the line of every
node remembered so that a validation error can say where in the file it is.

Hostile or broken files are refused before they can cost much time
(`YamlLimits`): a file larger than `max_file_bytes` is refused by its size
before it is read, and a document whose nodes, counting every use of an alias
as a full copy, exceed `max_nodes` is refused while it is composed, so a
400-byte alias bomb fails in milliseconds instead of expanding into a
billion-node tree. libyaml's C scanner is used when PyYAML has it (the
composer stays ours, to count); the pure-Python scanner otherwise.

These functions block: the live reload runs them in a worker thread.

>>> from router.schema import DeploymentsFile
>>> load_model("config/deployments.yaml", DeploymentsFile)  # doctest: +SKIP
(DeploymentsFile(deployments=...), {("deployments",): 1, ...})
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver, Resolver
from yaml.scanner import Scanner

from router.errors import ConfigError, ConfigIssue

try:  # libyaml's scanner and parser, ~3x faster than the pure-Python ones
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    CParser = None  # type: ignore[assignment,misc]

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class YamlLimits:
    """Bounds on one YAML file, checked before and while it is parsed.

    `max_file_bytes`: size in bytes above which a file is refused unread
    (setting `policy_max_file_bytes`). `max_nodes`: nodes a document may hold
    once every alias is expanded (setting `policy_max_yaml_nodes`); a mapping
    entry counts its key and its value.
    """

    max_file_bytes: int = 1 << 20
    max_nodes: int = 100_000


DEFAULT_LIMITS = YamlLimits()


class _LimitExceeded(Exception):
    """A document is over a `YamlLimits` bound: reported as such, not as "invalid YAML"."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.line: int | None = mark.line + 1 if mark is not None else None


class _Events(Protocol):
    def check_event(self, *choices: type[yaml.Event]) -> bool: ...
    def peek_event(self) -> yaml.Event: ...


class _CountingComposer(Composer):
    """Builds the node graph as PyYAML does, weighing each node by its expanded size.

    A node weighs 1 plus its children's weights, and an alias weighs what its
    anchor weighs, so the root's weight is the size of the tree that
    constructing, line-mapping and validating the document would walk. The
    first node heavier than `max_nodes` stops composition: everything after it
    (where alias bombs do their damage) never runs.
    """

    max_nodes: int = DEFAULT_LIMITS.max_nodes
    _weights: dict[int, int]

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if not hasattr(self, "_weights"):
            self._weights = {}
        events = cast(_Events, self)  # the parser half of the loader this composer is mixed into
        alias = events.check_event(yaml.AliasEvent)
        mark = events.peek_event().start_mark
        node = super().compose_node(parent, index)
        if node is None:
            return None
        if alias:
            if id(node) not in self._weights:  # an anchor used inside itself: an infinite tree
                raise _LimitExceeded("an alias refers to the node that contains it", mark)
            return node
        weight = 1 + sum(self._weights[id(child)] for child in _children(node))
        if weight > self.max_nodes:
            raise _LimitExceeded(
                f"document expands to more than {self.max_nodes} nodes (each use of an alias counts in full); "
                "if the file is really this large, raise the policy_max_yaml_nodes setting "
                "(env ROUTER_POLICY_MAX_YAML_NODES)", node.start_mark)
        self._weights[id(node)] = weight
        return node


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


class _StrictConstructor(SafeConstructor):
    """SafeConstructor that refuses duplicate keys."""


class _StrictResolver(Resolver):
    """Reads booleans as YAML 1.2 does.

    YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans, so `retry: {on: [...]}`
    would silently become `{True: [...]}`; only `true` and `false` are booleans here.
    """


_BOOL_TAG = "tag:yaml.org,2002:bool"
_StrictResolver.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_StrictResolver.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: SafeConstructor, node: MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


# The stubs only accept PyYAML's own loader classes here; ours are assembled from the same mixins.
_StrictConstructor.add_constructor(BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[type-var]


class _PyLoader(Reader, Scanner, Parser, _CountingComposer, _StrictConstructor, _StrictResolver):
    def __init__(self, text: str, max_nodes: int) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.max_nodes = max_nodes


if CParser is not None:
    # The composer comes first in the MRO so that CParser's own (uncounted) composer is never used.
    class _CLoader(_CountingComposer, CParser, _StrictConstructor, _StrictResolver):
        def __init__(self, text: str, max_nodes: int) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self.max_nodes = max_nodes

    _Loader: type[_PyLoader] | type[_CLoader] = _CLoader
else:  # pragma: no cover
    _Loader = _PyLoader


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


def read_bounded(path: Path | str, max_bytes: int = DEFAULT_LIMITS.max_file_bytes) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes` bytes.

    The size is checked with fstat before reading and the read stops one byte
    past the cap (a file growing meanwhile cannot make it read more).
    Raises ConfigError naming the file: unreadable, not a regular file, too
    large (with the limit and the setting that raises it) or not UTF-8.
    """
    name = str(path)
    try:
        # O_NONBLOCK: opening a FIFO someone dropped among the policies must not hang the reader
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError([ConfigIssue(name, "", "not a regular file")])
            if info.st_size > max_bytes:
                raise ConfigError([_too_large(name, info.st_size, max_bytes)])
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError([ConfigIssue(name, "", f"cannot read: {exc.strerror}")]) from exc
    if len(raw) > max_bytes:
        raise ConfigError([_too_large(name, len(raw), max_bytes)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigIssue(name, "", f"not UTF-8 text (byte {exc.start})", line)]) from exc


def _too_large(file: str, size: int, limit: int) -> ConfigIssue:
    return ConfigIssue(file, "", f"file is {size} bytes, over the limit of {limit} bytes; if it is really this "
                       "large, raise the policy_max_file_bytes setting (env ROUTER_POLICY_MAX_FILE_BYTES)")


def parse_yaml(text: str, file: str, limits: YamlLimits = DEFAULT_LIMITS) -> tuple[Any, dict[Loc, int]]:
    """Parse one YAML document; return the data and a field-path -> line map.

    Raises ConfigError naming `file` and the line: invalid YAML, a tag that
    would build an object, a duplicate key, or more than `limits.max_nodes`
    nodes once aliases are expanded.
    """
    loader = _Loader(text, limits.max_nodes)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        lines = _line_map(node)
    except _LimitExceeded as exc:
        raise ConfigError([ConfigIssue(file, "", exc.message, exc.line)]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError([ConfigIssue(file, "", f"invalid YAML: {problem}", line)]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, "", f"invalid YAML: {exc}")]) from exc
    except RecursionError as exc:
        raise ConfigError([ConfigIssue(file, "", "YAML nested too deeply to read")]) from exc
    finally:
        loader.dispose()
    return data, lines


def load_yaml(path: Path | str, limits: YamlLimits = DEFAULT_LIMITS) -> tuple[Any, dict[Loc, int]]:
    """Read (`read_bounded`) and parse (`parse_yaml`) one file; raise ConfigError naming it."""
    return parse_yaml(read_bounded(path, limits.max_file_bytes), str(path), limits)


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


def load_model(path: Path | str, model: type[M], limits: YamlLimits = DEFAULT_LIMITS) -> tuple[M, dict[Loc, int]]:
    """Load and validate one file against `model`; raise ConfigError naming file, line, field.

    Returns the model and the field-path -> line map. `limits` bounds the
    file's size and expanded node count (see `YamlLimits`).
    """
    data, lines = load_yaml(path, limits)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(str(path), "", "top level must be a mapping", 1)])
    try:
        return model.model_validate(data), lines
    except ValidationError as exc:
        raise ConfigError(issues_from_validation(str(path), exc, lines)) from exc
