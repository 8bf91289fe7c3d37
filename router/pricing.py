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
from typing import Any

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

    def _entry(self, model: str) -> dict[str, Any] | None:
        if self._cost_map is None:
            self._cost_map = _bundled_cost_map()
        entry = self._cost_map.get(model)
        if entry is None and "/" in model:
            entry = self._cost_map.get(model.split("/", 1)[1])
        return entry if isinstance(entry, dict) else None

    def per_mtok(self, deployment: Deployment) -> tuple[float, float]:
        """(input, output) USD per million tokens; (0, 0) when nothing is known."""
        if deployment.price is not None:
            return deployment.price.input_per_mtok, deployment.price.output_per_mtok
        entry = self._entry(deployment.model)
        if entry is None:
            return 0.0, 0.0
        return (
            float(entry.get("input_cost_per_token") or 0.0) * 1e6,
            float(entry.get("output_cost_per_token") or 0.0) * 1e6,
        )

    def cost(self, deployment: Deployment, input_tokens: int, output_tokens: int) -> float:
        """USD for a call with these token counts."""
        inp, out = self.per_mtok(deployment)
        return (input_tokens * inp + output_tokens * out) / 1e6
