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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from router.sim.models import Fault, SimModel
from router.sim.server import SimServer

__all__ = ["default_models", "load_models", "main"]


def default_models() -> list[SimModel]:
    """The models the CLI serves when no file is given.

    Example:
        >>> [model.name for model in default_models()]
        ['sim-fast', 'sim-cheap', 'sim-smart', 'sim-flaky']
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


async def _serve(server: SimServer) -> None:
    async with server:
        names = ", ".join(server.models)
        print(f"sim serving {names} at {server.base_url}", flush=True)
        await asyncio.Event().wait()


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
    models = load_models(args.models) if args.models else default_models()
    server = SimServer(models, seed=args.seed, host=args.host, port=args.port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server))


if __name__ == "__main__":
    main()
