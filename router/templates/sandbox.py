"""The Jinja2 sandbox prompts render in, narrowed to data, and the load-time check of forbidden constructs.

No attribute access but the for-loop's counters, data-only lookups, a capped
`range`, an allow-list of filters, and operators that cannot build values over
`max_output_chars`. `forbidden` lists what a parsed template may not contain.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from typing import Any

from jinja2 import Environment, StrictUndefined, TemplateRuntimeError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

#: Largest rendered message (characters).
MAX_OUTPUT_CHARS = 200_000
_MAX_RANGE = 1000


class MissingVariable(UndefinedError):
    """A template used a variable the caller did not give; `name` is the top-level variable, if known."""

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
            MissingVariable, name=name if obj is missing else None)


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


class PromptSandbox(ImmutableSandboxedEnvironment):
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


#: `loop.index` and friends: plain values of the for-loop's counter, the one attribute read allowed.
_LOOP_FIELDS = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0",
                          "previtem", "nextitem"})


def _is_loop_field(node: nodes.Getattr) -> bool:
    return isinstance(node.node, nodes.Name) and node.node.name == "loop" and node.attr in _LOOP_FIELDS


_BANNED: dict[type[nodes.Node], str] = {
    nodes.Macro: "macros", nodes.CallBlock: "call blocks", nodes.Extends: "extends",
    nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "import",
}


def forbidden(tree: nodes.Template) -> list[tuple[str, int]]:
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
