"""Prices per deployment: the YAML override, else LiteLLM's bundled cost map.

The cost map is read straight from the JSON file inside the installed
litellm package, so pricing a policy (validate, explain, compile) never pays
for `import litellm`. The file is parsed once, on first need.

>>> PriceBook().per_mtok(deployment)  # doctest: +SKIP
(0.15, 0.6)
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, NamedTuple

from router.models import Usage
from router.schema import Deployment

_COST_MAP_FILE = "model_prices_and_context_window_backup.json"


def _bundled_cost_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / _COST_MAP_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class PriceBook:
    """Looks up USD per million tokens (input, output) for deployments."""

    def __init__(self, cost_map: dict[str, Any] | None = None) -> None:
        self._cost_map = cost_map
        #: name -> (the deployment object they were computed for, its rates): every call prices its answer.
        self._rates: dict[str, tuple[Deployment, Rates]] = {}

    def _entry(self, model: str) -> dict[str, Any] | None:
        if self._cost_map is None:
            self._cost_map = _bundled_cost_map()
        entry = self._cost_map.get(model)
        if entry is None and "/" in model:
            entry = self._cost_map.get(model.split("/", 1)[1])
        return entry if isinstance(entry, dict) else None

    def per_mtok(self, deployment: Deployment) -> tuple[float, float]:
        """(input, output) USD per million tokens; (0, 0) when nothing is known."""
        rates = self.rates(deployment)
        return rates.input * 1e6, rates.output * 1e6

    def rates(self, deployment: Deployment) -> Rates:
        """USD per token for each kind of token; cached and reasoning rates default to the
        input and output rates where neither the YAML nor LiteLLM's table says otherwise."""
        known = self._rates.get(deployment.name)
        if known is not None and known[0] is deployment:
            return known[1]
        rates = self._rates_of(deployment)
        self._rates[deployment.name] = (deployment, rates)
        return rates

    def _rates_of(self, deployment: Deployment) -> Rates:
        p = deployment.price
        if p is not None:
            inp = p.input_per_mtok / 1e6
            cached = p.cached_input_per_mtok / 1e6 if p.cached_input_per_mtok is not None else inp
            write = p.cache_write_per_mtok / 1e6 if p.cache_write_per_mtok is not None else inp
            out = p.output_per_mtok / 1e6
            return Rates(inp, out, cached, write, out)
        entry = self._entry(deployment.model)
        if entry is None:
            return _UNKNOWN
        inp = float(entry.get("input_cost_per_token") or 0.0)
        out = float(entry.get("output_cost_per_token") or 0.0)
        return Rates(
            inp, out,
            float(entry.get("cache_read_input_token_cost") or inp),
            float(entry.get("cache_creation_input_token_cost") or inp),
            float(entry.get("output_cost_per_reasoning_token") or out),
        )

    def known(self, deployment: Deployment) -> bool:
        """True when the YAML or LiteLLM's table prices this deployment."""
        return deployment.price is not None or self._entry(deployment.model) is not None

    def cost(self, deployment: Deployment, input_tokens: int, output_tokens: int) -> float:
        """USD for a call with these token counts (all at the plain input and output rates)."""
        r = self.rates(deployment)
        return input_tokens * r.input + output_tokens * r.output

    def usage_cost(self, deployment: Deployment, usage: Usage) -> float:
        """USD for `usage`: cache reads and writes and reasoning tokens at their own rates.

        >>> book.usage_cost(gpt_4o_mini, Usage(input_tokens=10_000, cached_input_tokens=9_000))  # doctest: +SKIP
        0.000825
        """
        r = self.rates(deployment)
        fresh = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
        plain_out = max(0, usage.output_tokens - usage.reasoning_tokens)
        return (fresh * r.input + usage.cached_input_tokens * r.cached_input
                + usage.cache_write_tokens * r.cache_write
                + plain_out * r.output + usage.reasoning_tokens * r.reasoning)


class Rates(NamedTuple):
    """USD per token."""

    input: float
    output: float
    cached_input: float
    cache_write: float
    reasoning: float


_UNKNOWN = Rates(0.0, 0.0, 0.0, 0.0, 0.0)
