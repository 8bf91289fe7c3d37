"""What the router costs the client, against bare LiteLLM and litellm.Router: instructions, CPU, throughput.

    python tests/benchmarks/bench_overhead.py               # ~5 minutes on 2 cores
    python tests/benchmarks/bench_overhead.py --quick       # ~2 minutes, a smoke test
    python tests/benchmarks/bench_overhead.py --configs ours,litellm.acompletion --no-write

One simulator process (`python -m router.sim`, zero-latency models) serves
every configuration; each configuration (bench_configs.CONFIGS) runs in
its own worker process (bench_worker.py), so no configuration inherits
another's imports, caches or heap.

1. **Instructions per request** (the primary figure): each worker runs under
   `valgrind --tool=callgrind --instr-atstart=no`, warms up uninstrumented,
   then counts two blocks of requests at concurrency 1 between callgrind
   client requests. The blocks must agree within 1%. Instruction counts do
   not depend on how busy the machine is.
2. **CPU time and throughput** (secondary): native workers, all started
   and warmed up, are timed in interleaved rounds at concurrency 1 and 50,
   so background load hits them alike; min, median and max of the rounds.
3. **Paired CPU time** (for a configuration with `paired_with`, the cache
   miss): one worker builds it and its partner, and times them block for
   block in alternating order; the median of the per-round differences is
   what it adds, steady to a microsecond or two where separate processes'
   medians move by tens.

The tables go to the "overhead" section of RESULTS.md (README's
Performance section is regenerated from it) and are printed.
Not collected by pytest (pyproject ignores tests/benchmarks). See README.md here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench_configs import CONFIGS, MODELS, Config, write_yaml  # noqa: E402
from results import RESULTS, machine_lines, table, valgrind_version, write_section  # noqa: E402

WORKER = HERE / "bench_worker.py"
BLOCK_AGREEMENT = 0.01
#: Same interpreter state in every worker: no hash randomisation to move dict layouts between runs.
WORKER_ENV = {**os.environ, "PYTHONHASHSEED": "0", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@dataclass
class Counted:
    """Instructions of the two callgrind blocks of one configuration."""

    blocks: list[int]
    requests: int
    errors: int

    @property
    def per_request(self) -> float:
        return statistics.fmean(self.blocks) / self.requests

    @property
    def disagreement(self) -> float:
        return abs(self.blocks[0] - self.blocks[1]) / statistics.fmean(self.blocks)


@dataclass
class Timed:
    """Interleaved rounds of one configuration at one concurrency."""

    cpu_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    errors: int = 0


class Simulator:
    """`python -m router.sim` with zero-latency models, in its own process."""

    def __init__(self, folder: Path) -> None:
        models = folder / "sim-models.yaml"
        models.write_text("".join(f"- {{name: {m}, ttft_ms: [0, 0], output_tokens: 8}}\n" for m in MODELS))
        self.proc = subprocess.Popen([sys.executable, "-m", "router.sim", "--port", "0", "--models", str(models)],
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT, env=WORKER_ENV)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+/v1)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = match.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def worker_args(config: Config, sim_url: str, folder: Path, redis_url: str, warmup: int) -> list[str]:
    return [sys.executable, str(WORKER), "--config", config.name, "--sim", sim_url, "--folder", str(folder),
            "--redis", redis_url, "--warmup", str(warmup)]


def count_one(config: Config, base: list[str], folder: Path, block: int) -> Counted:
    """Run one worker under callgrind; read the two dumps its client requests wrote."""
    out = folder / f"callgrind-{re.sub(r'[^a-z0-9]+', '-', config.name.lower())}"
    out.mkdir()
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/cg.out",
               *base, "--callgrind-block", str(block)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=WORKER_ENV, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{config.name}: callgrind worker failed:\n{done.stderr[-3000:]}")
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    totals = {}
    for dump in out.glob("cg.out.*"):
        text = dump.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: Client Request: .* (block\d)$", text, re.M)
        total = re.search(r"^totals: (\d+)", text, re.M)
        if label and total:
            totals[label.group(1)] = int(total.group(1))
    return Counted([totals["block1"], totals["block2"]], block, sum(b["errors"] for b in reply["blocks"]))


def count_all(configs: list[Config], sim_url: str, folder: Path, redis_url: str, args: argparse.Namespace
              ) -> dict[str, Counted]:
    compile_first = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); "
                                    f"import bench_worker; bench_worker.compile_markers(__import__('pathlib')"
                                    f".Path({str(folder)!r}))"], check=True, cwd=ROOT)
    assert compile_first.returncode == 0  # once, before the parallel workers would race to build it

    def one(config: Config) -> tuple[str, Counted]:
        t0 = time.perf_counter()
        base = worker_args(config, sim_url, folder, redis_url, args.warmup)
        counted = count_one(config, base, folder, args.block * config.block_scale)
        print(f"  {config.name:<30} {counted.per_request / 1e6:8.2f} M instructions/request "
              f"(blocks differ by {counted.disagreement:.2%}; {time.perf_counter() - t0:.0f} s)", flush=True)
        return config.name, counted

    with ThreadPoolExecutor(args.jobs) as pool:
        return dict(pool.map(one, configs))


def time_all(configs: list[Config], sim_url: str, folder: Path, redis_url: str, args: argparse.Namespace
             ) -> dict[tuple[str, int], Timed]:
    """Native workers, all warmed up, then interleaved rounds: each round runs every config in turn."""
    workers = {c.name: subprocess.Popen(worker_args(c, sim_url, folder, redis_url, args.warmup), cwd=ROOT,
                                        env=WORKER_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for c in configs}
    results: dict[tuple[str, int], Timed] = {}
    try:
        for name, proc in workers.items():
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if '"ready"' not in ready:
                raise RuntimeError(f"{name}: worker did not start: {ready!r}")
        plan = [(1, args.requests // 5), (50, args.requests)]
        for r in range(args.rounds):
            for concurrency, requests in plan:
                for name, proc in workers.items():
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(json.dumps({"concurrency": concurrency, "requests": requests}) + "\n")
                    proc.stdin.flush()
                    reply = json.loads(proc.stdout.readline())
                    timed = results.setdefault((name, concurrency), Timed())
                    timed.cpu_us.append(reply["cpu_s"] / requests * 1e6)
                    timed.rps.append(requests / reply["wall_s"])
                    timed.errors += reply["errors"]
            print(f"  round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for proc in workers.values():
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in workers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return results


@dataclass
class Paired:
    """CPU µs per request of a configuration and its partner, per round, timed in one process."""

    partner: str
    a_us: list[float]
    b_us: list[float]

    @property
    def added(self) -> list[float]:
        return [a - b for a, b in zip(self.a_us, self.b_us, strict=True)]


def time_pairs(configs: list[Config], sim_url: str, folder: Path, redis_url: str, args: argparse.Namespace
               ) -> dict[str, Paired]:
    """Each configuration that names a partner, timed against it block for block in one worker."""
    out: dict[str, Paired] = {}
    for c in configs:
        if c.paired_with is None:
            continue
        t0 = time.perf_counter()
        command = [*worker_args(c, sim_url, folder, redis_url, args.warmup), "--pair", c.paired_with,
                   "--pair-rounds", str(args.pair_rounds), "--pair-block", str(args.pair_block)]
        done = subprocess.run(command, cwd=ROOT, env=WORKER_ENV, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{c.name}: paired worker failed:\n{done.stderr[-2000:]}")
        pair = json.loads(done.stdout.splitlines()[-1])["pair"]
        out[c.name] = Paired(c.paired_with, pair["a_us"], pair["b_us"])
        print(f"  {c.name}: adds {statistics.median(out[c.name].added):.1f} µs "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def published_counts() -> dict[str, float]:
    """Instructions per request as RESULTS.md holds them now (to show how far this run is from them)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = re.search(r"<!-- begin overhead -->(.*?)<!-- end overhead -->", text, re.S)
    rows = re.findall(r"^\| ([^|]+?) \| ([\d.]+) M \|", section.group(1) if section else "", re.M)
    return {name: float(millions) * 1e6 for name, millions in rows}


def redis_up() -> bool:
    try:
        done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"], capture_output=True,
                              text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return "PONG" in done.stdout


# -- report -----------------------------------------------------------------------------------


def ratio(value: float, reference: float | None) -> str:
    if not reference:
        return "-"
    share = value / reference
    return f"{share:.2f}x" if share >= 0.1 else f"{share:.3f}x"


def report(configs: list[Config], counted: dict[str, Counted], timed: dict[tuple[str, int], Timed],
           paired: dict[str, Paired], args: argparse.Namespace, last: dict[str, float], about: list[str],
           seconds: float) -> str:
    bare = next((c.name for c in configs if c.group == "bare"), None)
    theirs = next((c.name for c in configs if c.group == "litellm.Router"), None)
    parts = ["## Overhead per request", "\n".join(about),
             f"`python tests/benchmarks/bench_overhead.py{' --quick' if args.quick else ''}` ({seconds / 60:.1f} "
             "min). One simulator process (zero latency) serves every configuration; each configuration runs "
             "in its own process. Ratios are against bare `litellm.acompletion` and against `litellm.Router`.",
             table(["configuration", "what"], [[c.name, c.what] for c in configs])]
    if counted:
        scaled = [f"{c.name} {args.block * c.block_scale}" for c in configs if c.block_scale != 1]
        ref_bare = counted[bare].per_request if bare in counted else None
        ref_theirs = counted[theirs].per_request if theirs in counted else None
        rows = []
        for c in configs:
            if c.name not in counted:
                continue
            k = counted[c.name]
            drift = f"{k.per_request / last[c.name] - 1:+.2%}" if c.name in last else "-"
            rows.append([_named(c.name, k.errors), f"{k.per_request / 1e6:.3f} M", f"{k.disagreement:.2%}", drift,
                         ratio(k.per_request, ref_bare), ratio(k.per_request, ref_theirs)])
        parts += [f"### Instructions per request (callgrind; two blocks of {args.block} requests at concurrency 1"
                  + (f" ({', '.join(scaled)})" if scaled else "")
                  + f", after {args.warmup} + {args.warmup} warm-up requests)",
                  table(["configuration", "instructions / request", "blocks differ", "vs RESULTS.md before", "vs bare",
                         "vs litellm.Router"], rows, right=(1, 2, 3, 4, 5))]
    if timed:
        rows = []
        for concurrency in (1, 50):
            ref_bare = _median(timed, bare, concurrency, "cpu_us")
            ref_theirs = _median(timed, theirs, concurrency, "rps")
            for c in configs:
                t = timed.get((c.name, concurrency))
                if t is None:
                    continue
                rows.append([_named(c.name, t.errors), str(concurrency), _spread(t.cpu_us), _spread(t.rps),
                             ratio(statistics.median(t.cpu_us), ref_bare), ratio(statistics.median(t.rps), ref_theirs)])
        parts += [f"### CPU time and throughput ({args.rounds} interleaved rounds of {args.requests // 5} requests "
                  f"at concurrency 1 and {args.requests} at 50; min / median / max)",
                  table(["configuration", "conc.", "CPU µs / request", "requests / s", "CPU vs bare",
                         "req/s vs litellm.Router"], rows, right=(1, 2, 3, 4, 5)),
                  "CPU time is the worker's (every thread, LiteLLM's logging tasks included), not the simulator's. "
                  "The ratios compare medians. On a shared machine the wall-clock figures move with the load; "
                  "the instruction counts do not."]
    if paired:
        rows = []
        for name, p in paired.items():
            added, partner = statistics.median(p.added), statistics.median(p.b_us)
            q1, _, q3 = statistics.quantiles(p.added, n=4)
            rows.append([name, p.partner, f"{partner:,.1f}", f"{added:,.1f} ({q1:,.1f} to {q3:,.1f})",
                         ratio(added, partner)])
        parts += [f"### What a configuration adds to its partner, timed in one process ({args.pair_rounds} rounds of "
                  f"{args.pair_block} requests each at concurrency 1, in alternating order; median and quartiles "
                  "of the per-round differences)",
                  table(["configuration", "partner", "partner's CPU µs / request", "adds CPU µs / request",
                         "added / partner"], rows, right=(2, 3, 4)),
                  "The last column does not depend on how fast the machine is that day: it is what the "
                  "configuration adds as a share of its partner's own CPU time, both measured side by side."]
    return "\n\n".join(parts)


def _median(timed: dict[tuple[str, int], Timed], name: str | None, concurrency: int, what: str) -> float | None:
    t = timed.get((name, concurrency)) if name else None
    return statistics.median(getattr(t, what)) if t else None


def _named(name: str, errors: int) -> str:
    return f"{name} ({errors} errors!)" if errors else name


def _spread(values: list[float]) -> str:
    return f"{min(values):,.0f} / {statistics.median(values):,.0f} / {max(values):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small blocks, few rounds: a smoke test (~2 min)")
    parser.add_argument("--configs", help="comma-separated configuration names (default: every default one)")
    parser.add_argument("--block", type=int, help="requests per callgrind block (default 30; 8 quick)")
    parser.add_argument("--warmup", type=int, help="warm-up requests at concurrency 1, then 50 (default 60; 20)")
    parser.add_argument("--rounds", type=int, help="interleaved timing rounds (default 9; 2 quick)")
    parser.add_argument("--requests", type=int, help="requests per round at concurrency 50, a fifth at 1 "
                        "(default 300; 100 quick)")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind workers at a time (default 2)")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--no-timing", action="store_true", help="skip the wall-clock rounds and the paired timing")
    parser.add_argument("--pair-rounds", type=int, help="paired timing rounds (default 41; 9 quick)")
    parser.add_argument("--pair-block", type=int, help="requests per paired block (default 300; 100 quick)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    args.block = args.block or (8 if args.quick else 30)
    args.warmup = args.warmup or (20 if args.quick else 60)
    args.rounds = args.rounds or (2 if args.quick else 9)
    args.requests = args.requests or (100 if args.quick else 300)
    args.pair_rounds = args.pair_rounds or (9 if args.quick else 41)
    args.pair_block = args.pair_block or (100 if args.quick else 300)
    if args.configs:
        unknown = [n for n in args.configs.split(",") if n not in CONFIGS]
        if unknown:
            parser.error(f"unknown configurations {unknown}; known: {sorted(CONFIGS)}")
        configs = [CONFIGS[n] for n in args.configs.split(",")]
    else:
        configs = [c for c in CONFIGS.values() if c.default]
    if not redis_up():
        print("(redis://127.0.0.1:6379 is not answering: configurations that need it are skipped)")
        configs = [c for c in configs if "redis" not in c.needs]
    if not args.no_callgrind and (shutil.which("valgrind") is None or shutil.which("gcc") is None):
        print("(valgrind or gcc is missing: no instruction counts; apt-get install valgrind gcc)")
        args.no_callgrind = True

    started = time.perf_counter()
    about = [*machine_lines("openai", "httpx", "opentelemetry-sdk", "redis"),
             f"- {valgrind_version() or 'no valgrind'}" if not args.no_callgrind else "- no instruction counts"]
    redis_url = f"redis://127.0.0.1:6379/0?prefix=bench-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as name:
        folder = Path(name)
        sim = Simulator(folder)
        try:
            write_yaml(folder, sim.url)
            print(f"simulator {sim.url} (pid {sim.proc.pid}); configurations: {', '.join(c.name for c in configs)}")
            counted: dict[str, Counted] = {}
            if not args.no_callgrind:
                print(f"\ninstructions: callgrind, {args.jobs} at a time, blocks of {args.block}", flush=True)
                counted = count_all(configs, sim.url, folder, redis_url, args)
            timed: dict[tuple[str, int], Timed] = {}
            if not args.no_timing:
                print(f"\nwall clock: {len(configs)} workers, {args.rounds} interleaved rounds", flush=True)
                timed = time_all(configs, sim.url, folder, redis_url, args)
            paired: dict[str, Paired] = {}
            if not args.no_timing and any(c.paired_with for c in configs):
                print(f"\npaired: {args.pair_rounds} rounds of {args.pair_block} requests", flush=True)
                paired = time_pairs(configs, sim.url, folder, redis_url, args)
        finally:
            sim.stop()
    text = report(configs, counted, timed, paired, args, published_counts(), about, time.perf_counter() - started)
    print("\n" + text)
    if counted:
        bad = [n for n, k in counted.items() if k.disagreement > BLOCK_AGREEMENT]
        if bad:
            print(f"\nWARNING: blocks disagree by more than {BLOCK_AGREEMENT:.0%} for {bad}; "
                  "try a larger --block", file=sys.stderr)
    if not args.no_write and not args.quick:
        write_section("overhead", text)


if __name__ == "__main__":
    main()
