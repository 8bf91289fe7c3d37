"""Terminal output for `llm-router`: tables and a live status line, with or without rich.

`rich` (the `cli` extra) draws the tables when it is installed and output is
not forced plain; otherwise the same tables come out as aligned plain text,
so `pip install -e . && llm-router demo` looks right with the base
dependencies alone.

>>> out = Output(plain=True)
>>> out.table(Table("Example", [Column("name"), Column("calls", right=True)], [["sim-fast", "12"]]))
Example
  name      calls
  ────────  ─────
  sim-fast     12
<BLANKLINE>
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from router.errors import AllAttemptsFailed, DeadlineExceeded, attempt_line, one_line
from router.strategies_learned import PRIOR_WEIGHT

if TYPE_CHECKING:
    from router.explain import Explanation
    from router.health import DeploymentHealth

__all__ = [
    "Column", "Output", "Table", "columns", "error_lines", "fmt_ms", "fmt_usd", "print_call",
    "print_explanation", "print_health", "rich_available",
]

#: Longest line an error prints: a provider's 2 kB body must not become one unreadable line.
ERROR_LINE_MAX = 300


@dataclass(frozen=True, slots=True)
class Column:
    """A table column; `right` aligns numbers."""

    header: str
    right: bool = False


@dataclass(slots=True)
class Table:
    """Rows of cells already formatted as text; `styles[i]` dims or colours row i."""

    title: str
    columns: list[Column]
    rows: list[list[str]]
    styles: list[str | None] = field(default_factory=list)
    caption: str | None = None


def rich_available() -> bool:
    """True when `rich` can be imported (it is optional)."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def fmt_ms(value: float | None) -> str:
    """`123.4` -> `"123"`, None -> `"-"`."""
    return "-" if value is None else f"{value:,.0f}"


def fmt_usd(value: float) -> str:
    """Dollars with enough digits for sub-cent simulated spend."""
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


class Output:
    """Writes tables, lines and a live status line to one stream.

    The live line redraws in place on a terminal and is printed at most every
    `every_s` seconds otherwise (pipes, CI logs, tests). `event()` prints a
    line above the live one.
    """

    def __init__(self, *, plain: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        if plain is None:  # rich on a terminal when installed; plain text for pipes and logs
            plain = bool(os.environ.get("LLM_ROUTER_PLAIN")) or not self.tty or not rich_available()
        self.plain = plain
        self._console: Any = None
        self._live: Any = None
        self._live_text = ""
        if not plain:
            from rich.console import Console

            # off a terminal rich would wrap at 80 columns: give the tables room instead
            self._console = Console(file=self.stream, highlight=False, width=None if self.tty else 200)
        utf8 = (getattr(self.stream, "encoding", None) or "utf-8").lower().replace("-", "") == "utf8"
        self.rule_char = "─" if utf8 else "-"
        self.arrow = "→" if utf8 else "->"

    # -- lines ------------------------------------------------------------------------

    def line(self, text: str = "", *, style: str | None = None) -> None:
        """Print one line (rich markup is not interpreted: text is printed as is)."""
        if self._console is not None:
            from rich.text import Text

            self._console.print(Text(text, style=style or ""), soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def event(self, text: str, *, style: str | None = None) -> None:
        """A line printed above the live status line, which is then redrawn."""
        if self._live is not None:
            from rich.text import Text

            self._live.console.print(Text(text, style=style or ""), soft_wrap=True)
            return
        if self.tty and self._live_text:
            self.stream.write("\r\033[K")
        self.line(text, style=style)
        if self.tty and self._live_text:
            self.stream.write(self._live_text)
            self.stream.flush()

    # -- the live status line -----------------------------------------------------------

    def live_start(self) -> None:
        """Begin redrawing a status line (only on a terminal)."""
        if self._console is not None and self.tty:
            from rich.live import Live
            from rich.text import Text

            self._live = Live(Text(""), console=self._console, refresh_per_second=8, transient=True)
            self._live.start()

    def live_update(self, text: str) -> None:
        """Replace the status line; off a terminal the caller decides when to print."""
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(text, style="bold"))
        elif self.tty:
            self._live_text = text
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        else:
            self.line(text)

    def live_stop(self) -> None:
        """Remove the status line."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self.tty and self._live_text:
            self.stream.write("\r\033[K")
            self.stream.flush()
        self._live_text = ""

    # -- tables -----------------------------------------------------------------------

    def table(self, table: Table) -> None:
        """Print a table: rich's if enabled, aligned plain text otherwise."""
        if self._console is not None:
            self._rich_table(table)
        else:
            self._plain_table(table)

    def _rich_table(self, table: Table) -> None:
        from rich import box
        from rich.table import Table as RichTable

        rt = RichTable(title=table.title, title_justify="left", title_style="bold",
                       caption=table.caption, caption_justify="left", box=box.SIMPLE_HEAD)
        for col in table.columns:
            rt.add_column(col.header, justify="right" if col.right else "left", no_wrap=not col.right)
        for i, row in enumerate(table.rows):
            style = table.styles[i] if i < len(table.styles) else None
            rt.add_row(*row, style=style)
        self._console.print(rt)

    def _plain_table(self, table: Table) -> None:
        widths = [len(c.header) for c in table.columns]
        for row in table.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

        def fmt(cells: list[str]) -> str:
            parts = [
                cell.rjust(widths[i]) if table.columns[i].right else cell.ljust(widths[i])
                for i, cell in enumerate(cells)
            ]
            return ("  " + "  ".join(parts)).rstrip()

        lines = [table.title, fmt([c.header for c in table.columns]),
                 "  " + "  ".join(self.rule_char * w for w in widths)]
        lines.extend(fmt(row) for row in table.rows)
        if table.caption:
            lines.append("  " + table.caption)
        print("\n".join(lines) + "\n", file=self.stream, flush=True)


# -- what each command prints ----------------------------------------------------------------


def print_explanation(e: Explanation, out: Output) -> None:
    """`llm-router explain`: the rule, the route, the deployments the tenant sees with the
    variables their keys come from, every candidate and the attempt order."""
    out.line(f"tenant {e.tenant}: prompt ~{e.prompt_tokens:,} tokens, needs a context of {e.needed_context:,}")
    out.line(f"rule:  {e.rule or '(none matched)'}")
    out.line(f"route: {e.route} (strategy {e.strategy}), picked by {e.route_source}", style="bold")
    if e.tenant_note:
        out.line(f"tenant: {e.tenant_note}", style="red")
    out.line("")
    _print_tenant_deployments(e, out)
    out.table(_candidates_table(e))
    if e.order:
        out.line(f"attempt order: {f' {out.arrow} '.join(e.order)}", style="bold")
    else:
        error = "TenantNotAllowed" if e.tenant_note else "NoRouteAvailable"
        out.line(f"attempt order: none; the call would fail with {error}", style="bold red")


def _candidates_table(e: Explanation) -> Table:
    """Every candidate; with a quality tracker also the measured quality (n = scores) and the blend
    a learning strategy ranks by."""
    spec = "route deployment kept reason score> circuit $/Mtok> quality> context> key"
    caption = "score: what the strategy ranks by, lower first (price, latency ms, -quality, ...)"
    if any(c.key_source == "override" for c in e.candidates):
        caption += "; an override is ranked in the place of the deployment it overrides, by that one's score"
    rows = [[c.route, c.deployment, "yes" if c.kept else "no", c.reason,
             "-" if c.score is None else f"{c.score:.4g}", c.circuit, f"{c.price_per_mtok:.2f}",
             f"{c.quality:.2f}", f"{c.context_window:,}", _key_cell(c.key_env, c.key_source)] for c in e.candidates]
    if e.quality_feedback:
        spec += " measured> n> blended>"
        caption += ("; quality: the YAML prior; measured: the mean feedback score of n scores; blended: the "
                    f"prior (worth {PRIOR_WEIGHT:g} scores) with the measurement, what best_quality/thompson rank by")
        for row, c in zip(rows, e.candidates, strict=True):
            row += ["-" if c.quality_measured is None else f"{c.quality_measured:.2f}", f"{c.quality_samples:,}",
                    "-" if c.quality_blended is None else f"{c.quality_blended:.3f}"]
    return Table("Candidates", columns(spec), rows, [None if c.kept else "dim" for c in e.candidates],
                 caption=caption)


#: Above this many, `explain` lists only the deployments a tenant sees differently from everyone.
_SHOW_ALL_SEEN = 20


def _env_name(var: str) -> str:
    """`$VAR`, marked when this process's environment has no value for it (the value is never shown;
    the service's environment may differ from the shell that runs `explain`)."""
    return f"${var}" if os.environ.get(var) else f"${var} (not set here)"


def _key_cell(key_env: str | None, source: str) -> str:
    """The variable a key comes from (its name, never its value) and, unless shared, why that one."""
    if source == "another tenant":
        return "-"
    name = _env_name(key_env) if key_env else "(none)"
    return name if source == "shared" else f"{name} ({source})"


def _print_tenant_deployments(e: Explanation, out: Output) -> None:
    own = [s for s in e.deployments if s.source != "shared"]
    if e.tenant_keys:
        keys = ", ".join(f"{target} {out.arrow} {_env_name(var)}" for target, var in sorted(e.tenant_keys.items()))
        out.line(f"tenant keys: {keys}")
    if not own:
        out.line(f"deployments: the {len(e.deployments)} shared ones, with the shared keys "
                 f"(tenant {e.tenant} has no keys or deployments of its own)")
        out.line("")
        return
    rows = e.deployments if len(e.deployments) <= _SHOW_ALL_SEEN else own
    hidden = len(e.deployments) - len(rows)
    out.table(Table(
        f"Deployments tenant {e.tenant} sees", columns("deployment source replaces key"),
        [[s.deployment, s.source, s.replaces or "-", _key_cell(s.key_env, "shared")] for s in rows],
        [None if s.source == "shared" else "bold" for s in rows],
        caption=f"and {hidden} more shared deployments, with the shared keys" if hidden else None))


def print_call(out: Output, deployment: str, route: str | None, tokens_in: int, tokens_out: int,
               cost: float, latency_ms: float, attempts: list[tuple[str, str]]) -> None:
    """`llm-router chat`: where the answer came from, what it cost, and any attempts before it."""
    via = f" (route {route})" if route else ""
    out.line(f"-- deployment {deployment}{via} | tokens {tokens_in} in, {tokens_out} out | "
             f"cost {fmt_usd(cost)} | latency {latency_ms:,.0f} ms", style="dim")
    if len(attempts) > 1:
        out.line("-- attempts: " + f" {out.arrow} ".join(f"{d} ({what})" for d, what in attempts), style="dim")


def print_health(health: list[DeploymentHealth], out: Output) -> None:
    """`llm-router status`: one row per deployment."""
    def retry(h: DeploymentHealth) -> str:
        if h.retry_in_s is None:
            return "-"
        return f"{h.retry_in_s:.1f}s" + (f" ({h.cooling})" if h.cooling else "")

    out.table(Table(
        "Deployments",
        columns("deployment state available p50_ms> p95_ms> p99_ms> error_rate> calls> in_flight> retry_in>"),
        [[h.name, h.state.value, "yes" if h.available else "no", fmt_ms(h.p50_ms), fmt_ms(h.p95_ms),
          fmt_ms(h.p99_ms), f"{h.error_rate:.0%}", str(h.calls_in_window), str(h.in_flight), retry(h)]
         for h in health],
        [None if h.available else "red" for h in health],
        caption="calls and error rate over the breaker's window (30 s by default)"))


def error_lines(exc: BaseException) -> list[str]:
    """What `llm-router` prints for a failed command: a header, then one line per attempt.

    >>> from router.models import Attempt
    >>> a = Attempt(deployment="gpt", outcome="error", error_type="auth",
    ...             error="no API key: set the environment variable OPENAI_API_KEY")
    >>> print("\\n".join(error_lines(AllAttemptsFailed(route="default", attempts=[a]))))
    error: route 'default': all 1 attempt(s) failed
      gpt -> auth: no API key: set the environment variable OPENAI_API_KEY
    """
    if isinstance(exc, AllAttemptsFailed):
        head = f"route {exc.route!r}: all {len(exc.attempts)} attempt(s) failed"
    elif isinstance(exc, DeadlineExceeded):
        head = f"route {exc.route!r}: deadline of {exc.deadline_s:g}s exceeded after {len(exc.attempts)} attempt(s)"
    else:
        return [f"error: {one_line(str(exc), ERROR_LINE_MAX)}"]
    return [f"error: {head}", *(f"  {attempt_line(a)}" for a in exc.attempts)]


def columns(spec: str) -> list[Column]:
    """`"name calls>"` -> a left-aligned "name" and a right-aligned "calls" (`_` is a space)."""
    return [Column(w.rstrip(">").replace("_", " "), right=w.endswith(">")) for w in spec.split()]
