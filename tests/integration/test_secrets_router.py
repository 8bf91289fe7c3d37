"""Planted credentials never leave the router: not in errors, reprs, logs, spans, metrics or the decision log.

A distinctive key sits in the environment variable of every simulated
deployment and a password sits in a URL (`api_base` and `api_base_env`);
the simulator then fails in every way it can, including a 400 that quotes
the Authorization header (`Fault.ECHO_AUTH`) and errors whose text carries
the key. Everything the process could show anyone is collected and
searched for the secrets, in plain and base64 form.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import sys
import textwrap
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from router import Router, RouterSettings, create_default_router
from router.context import RequestContext
from router.errors import (
    AllAttemptsFailed,
    DeadlineExceeded,
    InvalidRequest,
    RouterError,
    StreamInterrupted,
)
from router.explain import explain
from router.sim import Fault, SimError, SimServer

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]

KEY_VAR = "LEAK_TEST_KEY"
BASE_VAR = "LEAK_TEST_BASE"
KEY = f"sk-PLANTED-{uuid.uuid4().hex}"
PASSWORD = f"pw-PLANTED-{uuid.uuid4().hex[:16]}"
ENV_PASSWORD = f"envpw-PLANTED-{uuid.uuid4().hex[:16]}"


def forbidden() -> dict[str, str]:
    """Every form a planted secret could take in text: as is, its random body, base64 of the credentials."""
    forms = {"key": KEY, "key body": KEY.removeprefix("sk-PLANTED-"), "url password": PASSWORD,
             "env url password": ENV_PASSWORD}
    for label, user, secret in (("basic", "user", PASSWORD), ("basic env", "user", ENV_PASSWORD),
                                ("basic key", "", KEY)):
        forms[label] = base64.b64encode(f"{user}:{secret}".encode()).decode()
    forms["key b64"] = base64.b64encode(KEY.encode()).decode()[:-4]
    return forms


def assert_clean(where: str, text: str) -> None:
    for label, secret in forbidden().items():
        assert secret not in text, f"{label} leaked in {where}: ...{_around(text, secret)}..."


def _around(text: str, secret: str) -> str:
    i = text.find(secret)
    return text[max(0, i - 120): i + len(secret) + 40]


STATUSES = (401, 403, 404, 429, 500, 503)

POLICY = """\
default_route: echo
embedding_route: embeddings
routes:
  echo:
    targets: [leak-flaky]
  everything:
    strategy: fallback
    targets: [leak-url, leak-env-url, leak-locked, leak-slow, leak-flaky]
    retry: {attempts: 2, backoff_s: 0, on: [unavailable, rate_limited]}
  deadline:
    targets: [leak-slow]
    retry: {attempts: 3, backoff_s: 0, on: [timeout]}
    deadline_s: 0.5
  stream:
    targets: [leak-fast]
  embeddings:
    targets: [leak-embed]
""" + "".join(f"  fallback-{s}:\n    targets: [leak-status-{s}, leak-fast]\n" for s in STATUSES)


def deployments(base_url: str) -> str:
    with_password = base_url.replace("http://", f"http://user:{PASSWORD}@")
    rows = [("leak-flaky", "sim-flaky", base_url, ""), ("leak-fast", "sim-fast", base_url, ""),
            ("leak-url", "sim-cheap", with_password, ""), ("leak-env-url", "sim-cheap", None, BASE_VAR),
            ("leak-locked", "sim-locked", base_url, ""), ("leak-slow", "sim-slow", base_url, "0.3"),
            ("leak-embed", "sim-embed", base_url, "")]
    # One deployment per status: a 401 cools its deployment, which must not hide the next status.
    rows += [(f"leak-status-{s}", "sim-flaky", base_url, "") for s in STATUSES]
    lines = ["deployments:"]
    for name, model, base, extra in rows:
        lines += [f"  - name: {name}", f"    model: openai/{model}", f"    api_key_env: {KEY_VAR}",
                  "    price: {input_per_mtok: 1, output_per_mtok: 2}"]
        lines.append(f"    api_base: '{base}'" if base else f"    api_base_env: {extra}")
        if name == "leak-slow":
            lines.append(f"    timeout_s: {extra}")
        if name == "leak-embed":
            lines.append("    capabilities: [embeddings]")
    return "\n".join(lines) + "\n"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Harness:
    """A router over the planted deployments, with every output it can produce captured."""

    router: Router
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    logs: _Records
    decision_log: Path
    raised: list[BaseException] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one router call; keep what it returned or raised."""
        try:
            result = await fn(*args, **kwargs)
        except RouterError as exc:
            self.raised.append(exc)
            return exc
        self.results.append(result)
        return result


LOGGERS = ("", "router", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "openai", "aiohttp")


@pytest.fixture
def captured_logs() -> Iterator[_Records]:
    handler = _Records()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


@pytest.fixture
def planted(tmp_path: Path, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RouterSettings]:
    """The key and the URL passwords in the environment, the deployments and policy on disk."""
    monkeypatch.setenv(KEY_VAR, KEY)
    monkeypatch.setenv(BASE_VAR, fresh_sim.base_url.replace("http://", f"http://user:{ENV_PASSWORD}@"))
    (tmp_path / "config").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "config" / "deployments.yaml").write_text(deployments(fresh_sim.base_url))
    (tmp_path / "policies" / "main.yaml").write_text(textwrap.dedent(POLICY))
    yield RouterSettings(config_dir=tmp_path / "config", policy_dir=tmp_path / "policies",
                         reload_interval_s=0, seed=1, decision_log_path=tmp_path / "decisions.jsonl")
    fresh_sim.restore()


@pytest.fixture
async def harness(planted: RouterSettings, captured_logs: _Records) -> AsyncIterator[Harness]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    router = await create_default_router(planted, tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert planted.decision_log_path is not None
    h = Harness(router, spans, reader, captured_logs, planted.decision_log_path)
    try:
        yield h
    finally:
        await router.aclose()


# -- what the process could show --------------------------------------------------------------


def exception_texts(exc: BaseException, seen: set[int] | None = None) -> Iterator[tuple[str, str]]:
    """Every text an exception exposes: str, repr, args, attributes (attempts included), its chain."""
    seen = set() if seen is None else seen
    if id(exc) in seen:
        return
    seen.add(id(exc))
    name = type(exc).__name__
    yield f"str({name})", str(exc)
    yield f"repr({name})", repr(exc)
    yield f"{name}.args", repr(exc.args)
    for attr, value in vars(exc).items():
        yield f"{name}.{attr}", repr(value)
        if attr == "attempts":
            for a in value:
                yield f"{name}.attempts[]", a.model_dump_json()
    yield f"format_exception({name})", "".join(traceback.format_exception(exc))
    for link in (exc.__cause__, exc.__context__):
        if link is not None:
            yield from exception_texts(link, seen)


def chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is o for o in out):
            continue
        out.append(e)
        todo += [e.__cause__, e.__context__]
    return out


def telemetry_texts(h: Harness) -> Iterator[tuple[str, str]]:
    for span in h.spans.get_finished_spans():
        yield f"span {span.name}", span.to_json()
    data = h.metrics.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                yield f"metric {metric.name}", metric.to_json()


def log_texts(h: Harness) -> Iterator[tuple[str, str]]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in h.logs.records:
        yield f"log {record.name}", formatter.format(record) + " " + repr(record.args) + repr(record.__dict__)


async def collect_everything(h: Harness, sim: SimServer) -> list[tuple[str, str]]:
    """Run every failure the simulator can produce; return (where, text) for all the router showed."""
    r = h.router
    # A 400 quoting the Authorization header: the caller's error, raised as is.
    sim.script("sim-flaky", [Fault.ECHO_AUTH])
    assert isinstance(await h.call(r.complete, "hi"), InvalidRequest)
    sim.script("sim-flaky", [Fault.ECHO_AUTH])
    assert isinstance(await h.call(_drain, r.stream("hi", route="echo")), InvalidRequest)
    sim.script("sim-embed", [Fault.ECHO_AUTH])
    assert isinstance(await h.call(r.embed, "hi"), InvalidRequest)
    # Provider errors whose text carries the key, at every status the backend maps; a fallback may answer.
    for status in STATUSES:
        sim.update("sim-flaky", custom_error=SimError(
            status=status, message=f"Incorrect API key provided: {KEY}. Authorization: Bearer {KEY}",
            type="invalid_request_error", headers={"x-echo": KEY}))
        sim.script("sim-flaky", [Fault.CUSTOM_ERROR])
        await h.call(r.complete, "hi", route=f"fallback-{status}")
    # Every deployment failing: URL credentials LiteLLM refuses, a wrong key (401), a hang, an echo.
    sim.script("sim-flaky", [Fault.ECHO_AUTH])
    failed = await h.call(r.complete, "hi", route="everything")
    assert isinstance(failed, InvalidRequest), failed
    sim.script("sim-flaky", [Fault.SERVER_ERROR, Fault.UNAVAILABLE])
    failed = await h.call(r.complete, "hi", route="everything")
    assert isinstance(failed, AllAttemptsFailed), failed
    assert {a.deployment for a in failed.attempts} == {"leak-url", "leak-env-url", "leak-locked", "leak-slow",
                                                       "leak-flaky"}
    timed_out = await h.call(r.complete, "hi", route="deadline")
    assert isinstance(timed_out, DeadlineExceeded | AllAttemptsFailed), timed_out
    # Streams cut before and after the first chunk, and a malformed one.
    for fault in (Fault.STREAM_CUT, Fault.CUT_AFTER_FIRST_CHUNK, Fault.MALFORMED):
        sim.script("sim-fast", [fault])
        cut = await h.call(_drain, r.stream("tell me a story", route="stream"))
        assert isinstance(cut, StreamInterrupted | AllAttemptsFailed), cut
    texts: list[tuple[str, str]] = []
    for exc in h.raised:
        texts += exception_texts(exc)
    for result in h.results:
        texts += [("result repr", repr(result)), ("result json", _json(result))]
    snap = r.source.current
    texts += [("snapshot repr", repr(snap)), ("snapshot str", str(snap)), ("router repr", repr(r))]
    for name in snap.deployments:
        texts.append((f"deployment {name}", repr(snap.deployments[name]) + str(snap.deployments[name])))
    for route in snap.routes:
        ctx = RequestContext(operation="embeddings" if route == "embeddings" else "chat", tenant="default",
                             route=route)
        decision = r.decide(ctx)
        texts += [(f"decide({route})", repr(decision) + str(decision))]
        texts.append((f"explain({route})", explain(snap, ctx, r.tracker, r.rng).model_dump_json()))
    texts += [("health", repr(r.health()) + "".join(x.model_dump_json() for x in r.health()))]
    await r.aclose()  # flushes the decision log and the telemetry
    texts.append(("decision log", h.decision_log.read_text() if h.decision_log.exists() else ""))
    texts += telemetry_texts(h)
    texts += log_texts(h)
    return texts


async def _drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [chunk async for chunk in stream]


def _json(result: Any) -> str:
    if isinstance(result, list):
        return "".join(_json(x) for x in result)
    dump = getattr(result, "model_dump_json", None)
    return dump() if dump is not None else repr(result)


# -- the tests ------------------------------------------------------------------------------------


async def test_planted_secrets_appear_nowhere(harness: Harness, fresh_sim: SimServer) -> None:
    texts = await collect_everything(harness, fresh_sim)
    # The collection itself must have seen the failures, or the search below proves nothing.
    kinds = {a.error_type for exc in harness.raised for a in getattr(exc, "attempts", ())}
    kinds |= {a.error_type for r in harness.results for a in getattr(r, "attempts", ())}
    assert {"auth", "not_found", "rate_limited", "unavailable", "timeout"} <= kinds, kinds
    assert len(harness.spans.get_finished_spans()) > 20
    assert any("[REDACTED]" in text for _, text in texts), "no scrubbed provider text was seen"
    # LiteLLM's own debug logging (its request dumps included) was on and searched as well.
    assert any(r.name == "LiteLLM" and r.levelno == logging.DEBUG for r in harness.logs.records)
    for where, text in texts:
        assert_clean(where, text)


async def test_no_error_keeps_a_foreign_exception_in_its_chain(harness: Harness, fresh_sim: SimServer) -> None:
    """Provider exceptions (and their text) are not reachable through __cause__ or __context__."""
    await collect_everything(harness, fresh_sim)
    assert len(harness.raised) >= 6
    for exc in harness.raised:
        for linked in chain(exc):
            assert isinstance(linked, RouterError), f"{type(exc).__name__} chains {type(linked).__module__}." \
                                                    f"{type(linked).__name__}"


def frame_locals(exc: BaseException) -> Iterator[tuple[str, str]]:
    """repr() of every local variable of every frame in the tracebacks of `exc` and its chain:
    what error reporters that capture locals (Sentry's default, rich's show_locals) would send."""
    for linked in chain(exc):
        tb = linked.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            for name, value in tb.tb_frame.f_locals.items():
                yield f"{type(linked).__name__} {Path(code.co_filename).name}:{code.co_name} local {name}", repr(value)
            tb = tb.tb_next


async def test_no_frame_in_a_raised_errors_traceback_holds_a_secret(harness: Harness, fresh_sim: SimServer) -> None:
    await collect_everything(harness, fresh_sim)
    texts = [text for exc in harness.raised for text in frame_locals(exc)]
    assert len(texts) > 50
    for where, text in texts:
        assert_clean(where, text)


async def test_url_passwords_are_hidden_where_deployments_are_shown(harness: Harness) -> None:
    """The URL password deployment is shown with its user and host, never its password."""
    d = harness.router.source.current.deployments["leak-url"]
    assert d.api_base is not None and PASSWORD in d.api_base  # the config holds it; only its display hides it
    assert "user:***@127.0.0.1" in repr(d)
    decision = harness.router.decide(RequestContext(operation="chat", tenant="default", route="everything"))
    assert "user:***@127.0.0.1" in repr(decision) and PASSWORD not in repr(decision)


async def test_a_403_falls_back_like_a_401(harness: Harness, fresh_sim: SimServer) -> None:
    fresh_sim.update("sim-flaky", custom_error=SimError(status=403, message="not allowed in this region"))
    fresh_sim.script("sim-flaky", [Fault.CUSTOM_ERROR])
    response = await harness.router.complete("hi", route="fallback-403")
    assert response.deployment == "leak-fast"
    assert response.attempts[0].error_type == "auth"


async def run_cli(settings: RouterSettings, *args: str) -> tuple[int, str, str]:
    """`llm-router ARGS` in a child process (the simulator keeps serving on this loop meanwhile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "OTEL_"))}
    env.update(ROUTER_CONFIG_DIR=str(settings.config_dir), ROUTER_POLICY_DIR=str(settings.policy_dir),
               ROUTER_RELOAD_INTERVAL_S="0", LITELLM_LOCAL_MODEL_COST_MAP="True")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=80)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(180)
async def test_cli_chat_failing_everywhere_prints_one_clean_line_per_attempt(
    planted: RouterSettings, fresh_sim: SimServer
) -> None:
    fresh_sim.update("sim-flaky", custom_error=SimError(status=500, message=f"upstream said: key={KEY} bad"))
    fresh_sim.script("sim-flaky", [Fault.UNAVAILABLE, Fault.CUSTOM_ERROR])
    code, out, err = await run_cli(planted, "chat", "--plain", "--route", "everything", "hi")
    assert code == 1, (out, err)
    assert_clean("llm-router chat stdout", out)
    assert_clean("llm-router chat stderr", err)
    lines = err.strip().splitlines()
    assert lines[0] == f"error: route 'everything': all {len(lines) - 1} attempt(s) failed", err
    attempts = [line.strip().split(" -> ")[0] for line in lines[1:]]
    # (the URL-credential deployments are tried once or twice, as the backend classifies LiteLLM's refusal)
    assert list(dict.fromkeys(attempts)) == ["leak-url", "leak-env-url", "leak-locked", "leak-slow", "leak-flaky"], err
    assert all(len(line) <= 2 + 60 + 200 for line in lines), err
    assert "leak-flaky -> unavailable: " in err and "key=[REDACTED]" in err

    # A 400 that quotes the Authorization header, on a stream: one line, scrubbed.
    fresh_sim.script("sim-flaky", [Fault.ECHO_AUTH])
    code, out, err = await run_cli(planted, "chat", "--plain", "--stream", "--route", "echo", "hi")
    assert code == 1, (out, err)
    assert_clean("llm-router chat --stream stderr", err)
    assert err.startswith("error: leak-flaky: ") and "Bearer [REDACTED]" in err and err.count("\n") == 1, err


def test_the_planted_forms_are_distinct() -> None:
    """The base64 forms the search looks for are what HTTP Basic auth would send."""
    forms = forbidden()
    assert base64.b64decode(forms["basic"]).decode() == f"user:{PASSWORD}"
    assert len(set(forms.values())) == len(forms)
    assert os.environ.get(KEY_VAR) is None  # planted by the fixture only, for one test at a time
