"""Run the simulator in the foreground: ``python -m router.sim``.

Serves four default models unless ``--models`` names a YAML file holding a
list of ``SimModel`` fields (Fault names as lower-case keys of ``error_rates``)::

    - name: sim-fast
      ttft_ms: [20, 5]
      tokens_per_s: 200
      error_rates: {rate_limit: 0.05}

Example:
    $ python -m router.sim --port 8000
    sim serving sim-fast, sim-cheap, sim-smart, sim-flaky at http://127.0.0.1:8000/v1
    ...

``run_sim`` is the same loop for other CLIs (``llm-router sim``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from router.sim.models import Fault, SimModel
from router.sim.server import SimServer

__all__ = ["default_models", "load_models", "main", "run_sim", "usage_banner"]


def default_models() -> list[SimModel]:
    """The models the CLI serves when no file is given.

    Example:
        >>> [model.name for model in default_models()]
        ['sim-fast', 'sim-cheap', 'sim-smart', 'sim-flaky', 'sim-embed']
    """
    return [
        SimModel(name="sim-fast", ttft_ms=(40, 10), tokens_per_s=400, context_window=16_384),
        SimModel(name="sim-cheap", ttft_ms=(150, 40), tokens_per_s=120, context_window=8_192),
        SimModel(
            name="sim-smart",
            ttft_ms=(400, 80),
            tokens_per_s=60,
            output_tokens=(60, 15),
            context_window=128_000,
        ),
        SimModel(
            name="sim-flaky",
            ttft_ms=(80, 30),
            tokens_per_s=200,
            error_rates={
                Fault.RATE_LIMIT: 0.1,
                Fault.SERVER_ERROR: 0.05,
                Fault.UNAVAILABLE: 0.05,
                Fault.STREAM_CUT: 0.05,
            },
            hang_s=10,
        ),
        SimModel(name="sim-embed", embedding_dim=16),
    ]


def load_models(path: Path) -> list[SimModel]:
    """Read a YAML list of ``SimModel`` fields.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        ...     _ = f.write("- {name: m, error_rates: {server_error: 0.5}}")
        >>> load_models(Path(f.name))[0].error_rates
        {<Fault.SERVER_ERROR: 'server_error'>: 0.5}
    """
    import yaml  # the CLI alone needs it; imported here to keep the package light

    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of simulated models")
    return [SimModel.model_validate(entry) for entry in entries]


def usage_banner(server: SimServer) -> str:
    """What a started simulator prints: its URL and how to point clients at it.

    The first line is ``sim serving <names> at <base_url>`` (scripts parse it).
    """
    names = ", ".join(server.models)
    first = next(iter(server.models), "sim-fast")
    return "\n".join([
        f"sim serving {names} at {server.base_url}",
        "",
        "OpenAI-compatible clients and LiteLLM (model 'openai/<name>'):",
        f"  export OPENAI_API_BASE={server.base_url}",
        "  export OPENAI_API_KEY=sk-sim  # any value unless a model sets required_api_key",
        "Anthropic Messages API (LiteLLM model 'anthropic/<name>'):",
        f"  export ANTHROPIC_API_BASE={server.root_url}",
        "  export ANTHROPIC_API_KEY=sk-sim",
        "Try it:",
        f"  curl -s {server.base_url}/chat/completions -H 'Content-Type: application/json' \\",
        f"    -d '{{\"model\": \"{first}\", \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}'",
        "Ctrl-C stops it.",
    ])


async def _serve(server: SimServer) -> None:
    async with server:
        print(usage_banner(server), flush=True)
        await asyncio.Event().wait()


def run_sim(
    port: int = 8000,
    *,
    host: str = "127.0.0.1",
    seed: int = 0,
    models: Sequence[SimModel] | None = None,
    models_file: Path | None = None,
) -> None:
    """Serve the simulator in the foreground until Ctrl-C; prints ``usage_banner`` first.

    Args:
        port: port to bind; 0 picks a free one.
        host: interface to bind.
        seed: seeds latency, fault draws and reply text.
        models: the models to serve; default ``default_models()``.
        models_file: a YAML list of ``SimModel`` fields, used when ``models`` is None.

    Raises:
        ValueError: the models file is not a list; pydantic ``ValidationError``
            for a bad model; ``OSError`` when the port is taken.
    """
    if models is None:
        models = load_models(models_file) if models_file is not None else default_models()
    server = SimServer(models, seed=seed, host=host, port=port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server))


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m router.sim", description="Run the OpenAI-compatible simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, help="YAML list of SimModel fields")
    args = parser.parse_args(argv)
    run_sim(args.port, host=args.host, seed=args.seed, models_file=args.models)


if __name__ == "__main__":
    main()
