"""`llm-router`: validate policies, explain a decision, send a call, watch health, run the demo.

    llm-router validate [PATHS...]        check deployments, policies and tenants files
    llm-router explain --tenant acme --tags interactive --prompt "..."
    llm-router chat "What is 2+2?" [--demo]
    llm-router status [--demo] [--probe N]
    llm-router demo [--duration 20 --rate 8]

`validate` and `explain` never import LiteLLM, so they run in a second.

>>> main(["validate", "config/", "policies/"])  # doctest: +SKIP
0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from router.cli_render import Output, error_lines, print_call, print_explanation, print_health
from router.client import Router
from router.context import RequestContext
from router.errors import ConfigError, ConfigIssue, RouterError
from router.explain import explain
from router.health import HealthTracker
from router.policy.loader import load_yaml, nearest_line
from router.policy.reload import ConfigFiles, PolicySource, load_snapshot
from router.policy.snapshot import Snapshot, compile_snapshot
from router.quality import tracker_from_url
from router.redact import url_for_display
from router.schema import PolicyFile, Retry, Route
from router.settings import RouterSettings
from router.tokens import count_tokens

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit status (0 ok, 1 failed, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and usage errors, as a status rather than an exit
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    out = Output(plain=True if args.plain else None)
    try:
        return int(args.run(args, out))
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except RouterError as exc:
        print("\n".join(error_lines(exc)), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-router", description="Routing policies for LLM calls on top of LiteLLM.",
        epilog="Settings come from ROUTER_* variables or .env (ROUTER_CONFIG_DIR, ROUTER_POLICY_DIR, "
               "ROUTER_QUOTA_STORE_URL, ROUTER_HEALTH_STORE_URL, ...).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plain", action="store_true",
                        help="plain-text tables even when rich is installed (also LLM_ROUTER_PLAIN=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("validate", parents=[common], help="check deployments, policies and tenants files",
                       description="Validate configuration files. A file is classified by its top-level key: "
                       "deployments, routes/rules (a policy) or tenants. Without PATHS: the settings' config/ "
                       "and policies/ directories, and the demo's files as a second set when present. Exit 0 "
                       "when every set is valid, else print each problem as file:line [field]: message, exit 1.")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="files or directories")
    p.set_defaults(run=_validate)

    p = sub.add_parser("explain", parents=[common], help="dry-run one routing decision (no call is made)",
                       description="Show which rule matches, which route serves, every candidate kept or "
                       "dropped and why, and the order attempts would follow. Health is this process's "
                       "(all closed) unless ROUTER_HEALTH_STORE_URL shares open circuits through Redis.")
    _request_args(p)
    p.add_argument("--prompt-tokens", type=int, help="pretend the prompt has this many tokens")
    p.add_argument("--embeddings", action="store_true", help="explain an embeddings call")
    p.add_argument("--needs", action="append", default=[], metavar="CAP",
                   choices=["tools", "json", "vision", "audio"],
                   help="the request needs this capability (tools, json, vision, audio); repeatable")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.add_argument("--demo", action="store_true", help="use the demo's policy and deployments")
    p.set_defaults(run=lambda a, o: asyncio.run(_explain(a, o)))

    p = sub.add_parser("chat", parents=[common], help="send one prompt through the router",
                       description="Send one real call; print the answer, then the deployment, tokens, cost "
                       "and latency. --demo starts the simulator in this process: no API key needed.")
    p.add_argument("prompt")
    _request_args(p, prompt=False)
    p.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    p.add_argument("--demo", action="store_true", help="call the simulated demo deployments")
    p.set_defaults(run=lambda a, o: asyncio.run(_chat(a, o)))

    p = sub.add_parser("status", parents=[common], help="health and latency of each deployment",
                       description="Circuit state, latency percentiles, error rate and in-flight calls per "
                       "deployment. Health lives in the memory of each router process, and this command "
                       "is a new process: it shows only what it measures itself (--probe N sends N tiny "
                       "calls per deployment first) plus, when ROUTER_HEALTH_STORE_URL is redis://..., the "
                       "open circuits that running replicas share through Redis. A service's own latency "
                       "figures are not visible from here: export them with OpenTelemetry.")
    p.add_argument("--probe", type=int, default=0, metavar="N", help="send N tiny calls per deployment first")
    p.add_argument("--demo", action="store_true", help="the simulated demo deployments")
    p.add_argument("--json", action="store_true", help="print the health records as JSON")
    p.set_defaults(run=lambda a, o: asyncio.run(_status(a, o)))

    p = sub.add_parser("demo", parents=[common], help="run the embedded demo (simulated models, ~20 s)",
                       description="Start simulated deployments in this process, route a trace-driven "
                       "workload through the demo policy with tenant quotas, degrade one deployment half "
                       "way, and print what happened. Needs no API key and no network.")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of traffic (default 20)")
    p.add_argument("--rate", type=float, default=8.0, help="mean requests per second (default 8)")
    p.add_argument("--seed", type=int, default=7, help="seed of the workload and simulator (default 7)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight at most (default 32)")
    p.set_defaults(run=_demo)

    p = sub.add_parser("sim", parents=[common], help="serve the OpenAI/Anthropic-compatible simulator",
                       description="Serve simulated models on 127.0.0.1 until Ctrl-C, and print the variables "
                       "that point the router (or any OpenAI client) at them. Needs no key and no network.")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--seed", type=int, default=0, help="seed of latencies and faults")
    p.set_defaults(run=_sim)

    p = sub.add_parser("replay", parents=[common], help="re-decide logged traffic under a policy edit",
                       description="Re-decide every request of a decision log (or an Azure-format trace) under "
                       "--policy, against --against (else what the log says happened), calling no provider; "
                       "print the diff. Exit 1 when the new policy loses requests, 2 for unreadable input.")
    p.add_argument("--log", type=Path, help="decision log (JSON lines) written with ROUTER_DECISION_LOG_PATH")
    p.add_argument("--trace", type=Path, help="or a CSV trace: TIMESTAMP,ContextTokens,GeneratedTokens")
    p.add_argument("--policy", type=Path, required=True, help="directory of the new policy (config/ + policies/)")
    p.add_argument("--against", type=Path, help="directory of the old policy")
    p.add_argument("--json", action="store_true", help="print the diff as JSON")
    p.add_argument("--seed", type=int, default=0, help="seed of the strategies' random choices")
    p.add_argument("--trace-tenant", default="default", help="tenant of the trace's requests")
    p.set_defaults(run=_replay)
    return parser


def _request_args(p: argparse.ArgumentParser, *, prompt: bool = True) -> None:
    p.add_argument("--route", help="name the route (skips the rules)")
    p.add_argument("--tenant", help="tenant (default: the settings' default tenant)")
    p.add_argument("--tags", default="", help="comma-separated tags, e.g. interactive,batch")
    p.add_argument("--model", help="a model alias from the policies")
    p.add_argument("--max-tokens", type=int, help="output token budget")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="request metadata")
    if prompt:
        p.add_argument("--prompt", default="", help="the prompt (its tokens are estimated)")


def _tags(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(t.strip() for t in args.tags.split(",") if t.strip())


def _metadata(args: argparse.Namespace) -> dict[str, str]:
    return dict(m.split("=", 1) if "=" in m else (m, "") for m in args.meta)


def _files(settings: RouterSettings, demo: bool) -> ConfigFiles:
    if demo:
        from router.demo import demo_files

        return demo_files(settings)
    from router.factory import config_files

    return config_files(settings)


def _snapshot(settings: RouterSettings, demo: bool) -> Snapshot:
    from router.factory import initial_source

    return initial_source(_files(settings, demo), settings).current


def _tracker(settings: RouterSettings) -> HealthTracker:
    from router.factory import build_health

    return build_health(settings)


# -- validate --------------------------------------------------------------------------------


def _validate(args: argparse.Namespace, out: Output) -> int:
    settings = RouterSettings()
    issues: list[ConfigIssue] = []
    sets = _sets_from_paths(args.paths, settings, issues) if args.paths else _default_sets(settings)
    if not sets and not issues:
        issues.append(ConfigIssue(str(settings.config_dir), "", "no configuration files found"))
    for name, files in sets:
        try:
            snap = load_snapshot(files, default_route=settings.default_route)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        from router.quota import reference_issues

        if snap.tenants is not None and files.tenants is not None:
            extra = reference_issues(snap.tenants, file=str(files.tenants), routes=snap.routes,
                                     deployments=snap.deployments)
            if extra:
                issues.extend(extra)
                continue
        tenants = f", {len(snap.tenants.tenants)} tenants" if snap.tenants else ""
        out.line(f"OK  {name}: {len(snap.routes)} routes, {len(snap.deployments)} deployments, "
                 f"{len(snap.rules)} rules{tenants}; default route {snap.default_route!r}", style="green")
        out.line(f"    {', '.join(str(p) for p in files.all() if p.exists())}")  # tenants.yaml is optional
    issues.extend(_prompt_issues(settings, out))
    unique = list(dict.fromkeys(_with_line(i) for i in issues))
    for issue in unique:
        out.line(str(issue), style="red")
    if unique:
        out.line(f"{len(unique)} problem(s) in {len({i.file for i in unique})} file(s)", style="bold red")
    return 1 if unique else 0


def _prompt_issues(settings: RouterSettings, out: Output) -> list[ConfigIssue]:
    """Check `policies/prompts/*.yaml` (templates reload with the policies)."""
    directory = settings.policy_dir / "prompts"
    if not directory.is_dir():
        return []
    from router.templates import load_templates

    try:
        templates = load_templates(directory)
    except ConfigError as exc:
        return list(exc.issues)
    out.line(f"OK  prompts: {len(templates.names())} templates in {directory}", style="green")
    return []


def _default_sets(settings: RouterSettings) -> list[tuple[str, ConfigFiles]]:
    from router.factory import config_files

    main = config_files(settings)
    sets = [("config", main)] if main.deployments.exists() or main.current_policies() else []
    demo_deps = settings.config_dir / "demo-deployments.yaml"
    demo_policy = settings.policy_dir / "demo.yaml"
    if demo_deps.exists() and demo_policy.exists():
        tenants = settings.config_dir / "demo-tenants.yaml"
        sets.append(("demo", ConfigFiles(demo_deps, (demo_policy,), tenants if tenants.exists() else None)))
    return sets


def _sets_from_paths(paths: Sequence[Path], settings: RouterSettings,
                     issues: list[ConfigIssue]) -> list[tuple[str, ConfigFiles]]:
    """Group files into sets: `x-deployments.yaml` goes with `x-tenants.yaml` and `policies/x.yaml`."""
    named: list[tuple[Path, bool]] = []  # (file, named explicitly)
    for path in paths:
        if path.is_dir():
            named.extend((p, False) for p in sorted(path.iterdir()) if p.suffix in (".yaml", ".yml"))
        else:
            named.append((path, True))
    kinds: dict[str, list[Path]] = {"deployments": [], "policy": [], "tenants": []}
    for path, _ in named:
        try:
            data, _lines = load_yaml(path)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        keys = set(data) if isinstance(data, dict) else set()
        kind = ("deployments" if "deployments" in keys else "policy" if keys & {"routes", "rules"}
                else "tenants" if "tenants" in keys else None)
        if kind is None:
            issues.append(ConfigIssue(str(path), "", "not a deployments, policy or tenants file "
                                      "(no top-level 'deployments', 'routes', 'rules' or 'tenants' key)", 1))
        else:
            kinds[kind].append(path)
    prefixes = {_prefix(p, "deployments"): p for p in kinds["deployments"]}
    explicit = {p for p, yes in named if yes}
    groups: dict[str, list[Path]] = {}
    for path in kinds["policy"]:
        key = path.stem if path.stem in prefixes else ""
        if key == "" and path.name in settings.policy_exclude and path not in explicit:
            continue  # e.g. policies/demo.yaml listed with the directory but not with its deployments
        groups.setdefault(key if key in prefixes or not prefixes else next(iter(prefixes)), []).append(path)
    tenants = {_prefix(p, "tenants"): p for p in kinds["tenants"]}
    default_deps = settings.config_dir / settings.deployments_file
    sets = []
    for key in sorted(dict.fromkeys([*prefixes, *groups]), key=lambda k: (k != "", k)):
        deps = prefixes.get(key, default_deps)
        if not groups.get(key):
            if not issues:  # a policy that failed to parse may be the one missing
                issues.append(ConfigIssue(str(deps), "", "no policy file goes with these deployments"))
            continue
        sets.append((key or "config", ConfigFiles(deps, tuple(groups[key]), tenants.get(key))))
    if not prefixes and not groups:
        # Tenants files named alone: each checked with the deployments and policies it refers to.
        for key, path in tenants.items():
            sets.extend(_with_tenants(key, path, settings, issues))
    return sets


def _with_tenants(key: str, tenants: Path, settings: RouterSettings,
                  issues: list[ConfigIssue]) -> list[tuple[str, ConfigFiles]]:
    """`tenants` with the `x` set when it is `x-tenants.yaml` and `config/x-deployments.yaml` and
    `policies/x.yaml` exist, else with the settings' deployments and policies."""
    from router.factory import config_files

    if key:
        named = ConfigFiles(settings.config_dir / f"{key}-deployments.yaml", (settings.policy_dir / f"{key}.yaml",),
                            tenants)
        if named.deployments.exists() and named.policies[0].exists():
            return [(key, named)]
    main = config_files(settings)
    files = ConfigFiles(main.deployments, main.current_policies(), tenants)
    if not (files.deployments.exists() and files.policies):
        issues.append(ConfigIssue(str(tenants), "", "no deployments and policy files to check it against "
                                  f"(looked for {files.deployments} and policies in {settings.policy_dir}; "
                                  "ROUTER_CONFIG_DIR and ROUTER_POLICY_DIR say where they are)"))
        return []
    return [("config", files)]


def _prefix(path: Path, kind: str) -> str:
    """`demo-deployments.yaml` -> "demo", `deployments.yaml` -> ""."""
    return path.stem.removesuffix(kind).rstrip("-_.")


def _with_line(issue: ConfigIssue) -> ConfigIssue:
    """Find the line of an issue found across files (they name a field, not a line)."""
    if issue.line is not None or not issue.field or not Path(issue.file).is_file():
        return issue
    loc: list[str | int] = []
    for part in issue.field.replace("]", "").split("."):
        name, *indexes = part.split("[")
        loc.append(name)
        loc.extend(int(i) for i in indexes if i.isdigit())
    try:
        _data, lines = load_yaml(issue.file)
    except ConfigError:
        return issue
    line = nearest_line(lines, tuple(loc))
    return issue if line is None else ConfigIssue(issue.file, issue.field, issue.message, line)


# -- explain ---------------------------------------------------------------------------------


async def _explain(args: argparse.Namespace, out: Output) -> int:
    settings = RouterSettings()
    snapshot = _snapshot(settings, args.demo)
    if args.route is not None and args.route not in snapshot.routes:
        print(f"error: no route {args.route!r}; routes: {', '.join(sorted(snapshot.routes))}", file=sys.stderr)
        return 2
    tokens = args.prompt_tokens
    if tokens is None:
        tokens = count_tokens([{"role": "user", "content": args.prompt}])
    ctx = RequestContext(
        operation="embeddings" if args.embeddings else "chat", tenant=args.tenant or settings.default_tenant,
        tags=frozenset(_tags(args)), metadata=_metadata(args), model_alias=args.model, route=args.route,
        prompt_tokens=tokens, max_tokens=args.max_tokens, capabilities=frozenset(args.needs))
    tracker = _tracker(settings)
    quality = tracker_from_url(settings.quality_store_url)
    try:
        await tracker.sync()  # the open circuits other replicas shared, when a store is configured
        await quality.refresh()  # the feedback other processes recorded, when the store is shared (Redis)
        if quality.store_errors:  # an empty "measured" column would read as "no feedback yet"
            print(f"warning: quality store {quality.store.name} unreachable; explaining without feedback",
                  file=sys.stderr)
        rng = random.Random(settings.seed)
        result = explain(snapshot, ctx, tracker, rng, quality=None if quality.store_errors else quality)
    finally:
        await tracker.aclose()
        await quality.aclose()
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_explanation(result, out)
    return 0


# -- chat ------------------------------------------------------------------------------------


async def _router(stack: contextlib.AsyncExitStack, settings: RouterSettings, demo: bool) -> Router:
    if demo:
        from router.demo import build_demo_router, demo_files, simulator

        await stack.enter_async_context(simulator(settings.seed or 7))
        router = await build_demo_router(demo_files(settings), seed=settings.seed)
    else:
        from router.factory import create_default_router

        router = await create_default_router(settings)
    stack.push_async_callback(router.aclose)
    return router


async def _chat(args: argparse.Namespace, out: Output) -> int:
    settings = RouterSettings(reload_interval_s=0)
    kwargs = {"tenant": args.tenant, "route": args.route, "tags": _tags(args), "metadata": _metadata(args),
              "model": args.model, "max_tokens": args.max_tokens}
    async with contextlib.AsyncExitStack() as stack:
        router = await _router(stack, settings, args.demo)
        if args.stream:
            async for chunk in router.stream(args.prompt, **kwargs):
                if chunk.delta:
                    sys.stdout.write(chunk.delta)
                    sys.stdout.flush()
                if chunk.done:
                    print()
                    usage = chunk.usage
                    print_call(out, chunk.deployment, None, usage.input_tokens if usage else 0,
                               usage.output_tokens if usage else 0, chunk.cost_usd or 0.0, chunk.latency_ms or 0.0,
                               [(a.deployment, a.error_type or a.outcome) for a in chunk.attempts])
        else:
            r = await router.complete(args.prompt, **kwargs)
            print(r.text)
            print_call(out, r.deployment, r.route, r.usage.input_tokens, r.usage.output_tokens, r.cost_usd,
                       r.latency_ms, [(a.deployment, a.error_type or a.outcome) for a in r.attempts])
    return 0


# -- status ----------------------------------------------------------------------------------


async def _status(args: argparse.Namespace, out: Output) -> int:
    settings = RouterSettings(reload_interval_s=0)
    shared = not settings.health_store_url.startswith("memory://")
    async with contextlib.AsyncExitStack() as stack:
        router = await _router(stack, settings, args.demo)
        reached = await router.tracker.sync() if shared else None
        if args.probe > 0:
            await probe(router, args.probe)
        health = router.health()
    if args.json:
        print(json.dumps([h.model_dump(mode="json") for h in health], indent=2))
        return 0
    print_health(health, out)
    where = "this process only"
    if shared:
        where += f", plus open circuits shared through {url_for_display(settings.health_store_url)}" + (
            "" if reached else " (unreachable)")
    out.line(f"source: {where}; {args.probe} probe call(s) per deployment. "
             "Use --probe N to measure; a running service's latency is in its OpenTelemetry metrics.")
    return 0


async def probe(router: Router, n: int) -> None:
    """Send `n` tiny calls to each deployment of `router`, recorded by its health tracker.

    Each deployment gets a one-target route with no retry, in a router that
    shares the tracker, so the tracker sees exactly one attempt per call.
    """
    snap = router.source.current
    no_retry = Retry(attempts=1)
    routes = {d.name: Route(targets=(d.name,), retry=no_retry, deadline_s=d.timeout_s)
              for d in snap.deployments.values()}
    probe_snap = compile_snapshot(list(snap.deployments.values()), "probe", [("probe", PolicyFile(routes=routes))],
                                  prices=snap.prices)
    prober = Router(PolicySource(probe_snap), settings=router.settings, health=router.tracker,
                    clock=router.clock, rng=random.Random(0))

    async def calls(name: str) -> None:
        embed_only = "chat" not in snap.deployments[name].capabilities
        for _ in range(n):
            with contextlib.suppress(RouterError):
                if embed_only:
                    await prober.embed("ping", route=name)
                else:
                    await prober.complete("ping", route=name, max_tokens=1)

    await asyncio.gather(*(calls(name) for name in snap.deployments))


# -- demo ------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace, out: Output) -> int:
    from router.demo import DemoOptions, run_demo

    opts = DemoOptions(duration_s=args.duration, rate=args.rate, seed=args.seed, concurrency=args.concurrency)
    return asyncio.run(run_demo(opts, out))


def _sim(args: argparse.Namespace, out: Output) -> int:
    from router.sim.__main__ import run_sim

    run_sim(args.port, seed=args.seed)
    return 0


def _replay(args: argparse.Namespace, out: Output) -> int:
    from router.replay import run_replay

    if args.log is None and args.trace is None:
        print("error: give --log or --trace", file=sys.stderr)
        return 2
    return run_replay(log=args.log, policy=args.policy, against=args.against, trace=args.trace,
                      as_json=args.json, seed=args.seed, trace_tenant=args.trace_tenant)


if __name__ == "__main__":
    sys.exit(main())
