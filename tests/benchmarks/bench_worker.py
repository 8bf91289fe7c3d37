"""One configuration in its own process, driven by bench_overhead.py over stdin/stdout (JSON lines).

    python tests/benchmarks/bench_worker.py --config ours --sim URL --folder DIR --redis URL
        prints {"ready": ...} once built and warmed up, then answers each line
        {"concurrency": C, "requests": N} with {"wall_s", "cpu_s", "errors"}; exits at end of input.

    valgrind --tool=callgrind --instr-atstart=no ... bench_worker.py ... --callgrind-block 30
        warms up uninstrumented, then runs two blocks of 30 requests, each between
        callgrind client requests (instrumentation on and counters zeroed before,
        counters dumped and instrumentation off after), prints {"blocks": [...]} and exits.

    python tests/benchmarks/bench_worker.py --config A --pair B --pair-rounds 41 --pair-block 300 ...
        builds both configurations in this one process, warms both up, then times rounds of
        one block of A and one of B at concurrency 1, in alternating order; prints
        {"pair": {"a_us": [...], "b_us": [...]}} (CPU µs per request, per round) and exits.
        Paired blocks share the machine's state of the moment, so A - B is steady where
        two processes' timings are not.

`time.process_time()` covers every thread of this process (the span export
thread included) and nothing of the simulator, which runs elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
for _var in [v for v in os.environ if v.startswith(("OTEL_", "ROUTER_"))]:
    del os.environ[_var]  # the ambient environment must not switch exporters or stores on

from bench_configs import CONFIGS, KEY, KEY_ENV, Client, Setup  # noqa: E402

#: Callgrind's client requests (valgrind/callgrind.h) are magic instruction sequences, so they need
#: a compiler; this is the whole library they are compiled into.
MARKERS_C = r"""
#include <valgrind/callgrind.h>
int bench_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
void bench_begin(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void bench_end(const char *label) { CALLGRIND_DUMP_STATS_AT(label); CALLGRIND_STOP_INSTRUMENTATION; }
"""


def compile_markers(folder: Path) -> Path:
    """Build the client-request library once per run (gcc and valgrind's headers are needed)."""
    source, library = folder / "markers.c", folder / "markers.so"
    if not library.exists():
        source.write_text(MARKERS_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


class Background:
    """The tasks requests leave behind (LiteLLM's logging tasks), told apart from long-lived ones.

    A block waits for its own leftovers before it is counted as done, so it
    pays for all of its work and none of the previous block's.
    """

    def __init__(self) -> None:
        self.long_lived: set[asyncio.Task[object]] = set(asyncio.all_tasks())

    async def settle(self, quiet_s: float = 0.5) -> None:
        """Wait for every task that is not long-lived; one that does not end within a quiet
        period in which none of the others ended either is taken to be long-lived."""
        while pending := asyncio.all_tasks() - self.long_lived - {asyncio.current_task()}:
            done, still = await asyncio.wait(pending, timeout=quiet_s)
            if not done:
                self.long_lived |= still


async def measure(client: Client, requests: int, concurrency: int, background: Background) -> dict[str, float]:
    """Wall time until the last response; CPU time until its background work is done too."""
    remaining, errors = requests, 0

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            try:
                await client.call()
            except Exception:
                errors += 1

    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    wall = time.perf_counter() - wall0
    await background.settle()
    client.flush()
    return {"wall_s": wall, "cpu_s": time.process_time() - cpu0, "errors": errors}


async def warm_up(client: Client, requests: int, background: Background) -> None:
    """Imports, connection pools and caches fill; then the heap LiteLLM left is frozen, so later
    collections scan only what the measured requests allocate (alike for every configuration)."""
    await measure(client, requests, 1, background)
    await measure(client, requests, 50, background)
    gc.collect()
    gc.freeze()


async def serve(args: argparse.Namespace) -> None:
    setup = Setup(sim_url=args.sim, folder=Path(args.folder), redis_url=args.redis)
    async with AsyncExitStack() as stack:
        client = await CONFIGS[args.config].build(setup, stack)
        other = await CONFIGS[args.pair].build(setup, stack) if args.pair else None
        background = Background()
        if args.callgrind_block:
            await count_instructions(client, args, background)
            return
        if other is not None:
            await time_pair(client, other, args, background)
            return
        await warm_up(client, args.warmup, background)
        reply({"ready": args.config})
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            reply(await measure(client, command["requests"], command["concurrency"], background))


async def count_instructions(client: Client, args: argparse.Namespace, background: Background) -> None:
    markers = ctypes.CDLL(str(compile_markers(Path(args.folder))))
    markers.bench_end.argtypes = [ctypes.c_char_p]
    if not markers.bench_on_valgrind():
        raise SystemExit("--callgrind-block needs to run under valgrind --tool=callgrind --instr-atstart=no")
    await warm_up(client, args.warmup, background)
    blocks = []
    for label in ("block1", "block2"):
        gc.collect()  # outside the block: each block starts from the same heap state
        markers.bench_begin()
        result = await measure(client, args.callgrind_block, args.callgrind_concurrency, background)
        markers.bench_end(f"{args.config} {label}".encode())
        blocks.append(result)
    reply({"blocks": blocks})


async def time_pair(a: Client, b: Client, args: argparse.Namespace, background: Background) -> None:
    for client in (a, b):
        await measure(client, args.warmup, 1, background)
    gc.collect()
    gc.freeze()
    a_us: list[float] = []
    b_us: list[float] = []
    for r in range(args.pair_rounds):
        for client in ((a, b) if r % 2 == 0 else (b, a)):
            result = await measure(client, args.pair_block, 1, background)
            (a_us if client is a else b_us).append(result["cpu_s"] / args.pair_block * 1e6)
    reply({"pair": {"a_us": a_us, "b_us": b_us}})


def reply(message: Mapping[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, choices=sorted(CONFIGS))
    parser.add_argument("--sim", required=True, help="the simulator's base URL (…/v1)")
    parser.add_argument("--folder", required=True, help="scratch folder holding our YAML (bench_configs.write_yaml)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--warmup", type=int, default=60, help="requests at concurrency 1, then 50, before measuring")
    parser.add_argument("--callgrind-block", type=int, default=0, help="count instructions of two blocks this long")
    parser.add_argument("--callgrind-concurrency", type=int, default=1)
    parser.add_argument("--pair", choices=sorted(CONFIGS), help="time against this configuration, in this process")
    parser.add_argument("--pair-rounds", type=int, default=41)
    parser.add_argument("--pair-block", type=int, default=300)
    args = parser.parse_args()
    os.environ[KEY_ENV] = KEY
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
