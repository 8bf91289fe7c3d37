"""Credentials stay out of what the router shows: scrubbed provider text, hidden URL passwords,
store names, and `llm-router` errors that name the missing key's variable in one line per attempt.

The end-to-end search (a planted key through the simulator, every exception,
span, metric and log record) is `tests/integration/test_secrets_router.py`.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest

from router.cli import main
from router.cli_render import ERROR_LINE_MAX, error_lines
from router.errors import (
    ATTEMPT_TEXT_MAX,
    AllAttemptsFailed,
    DeadlineExceeded,
    InvalidRequest,
    RouterError,
    attempt_line,
)
from router.models import Attempt
from router.policy.snapshot import compile_snapshot
from router.redact import scrub, url_for_display
from router.schema import Deployment, PolicyFile, Route, hide_url_password

pytestmark = pytest.mark.timeout(60)

PASSWORD = f"pw-PLANTED-{uuid.uuid4().hex[:12]}"


# -- scrub ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("rejected credentials 'Basic dXNlcjpodW50ZXIy' for this deployment", "dXNlcjpodW50ZXIy"),
        ("Authorization: Token abcdef123456 refused", "abcdef123456"),
        ("{'authorization': 'Bearer sk-proj-AbCdEf123456'}", "AbCdEf123456"),
        ("Proxy-Authorization: Basic YWxpY2U6czNjcmV0", "YWxpY2U6czNjcmV0"),
        ("api-key: 0123abcd4567 (Azure header)", "0123abcd4567"),
        ("x-goog-api-key: AIzaSyD-1234567890abcdefghij", "AIzaSyD-1234567890"),
        ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "wJalrXUtnFEMI"),
        ("client_secret=s3cr3t-value&grant_type=client_credentials", "s3cr3t-value"),
        ('"access_token": "ya29.a0AfH6SM"', "ya29.a0AfH6SM"),
        ("AccessKeyId AKIAIOSFODNN7EXAMPLE is not valid", "AKIAIOSFODNN7EXAMPLE"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig123", "eyJzdWIiOiIxMjM0NTY3ODkwIn0"),
        ("key sk-ant-api03-abcdefghijklmnop rejected", "abcdefghijklmnop"),
        (f"cannot reach https://user:{PASSWORD}@proxy.local:3128", PASSWORD),
        ("cannot reach https://user:pa/ss@proxy.local:3128/v1", "pa/ss"),
        ("cannot reach https://ghp_tok3n@git.example.com/x", "ghp_tok3n"),
    ],
)
def test_scrub_blanks_credentials_in_every_form_providers_quote(text: str, secret: str) -> None:
    scrubbed = scrub(text)
    assert secret not in scrubbed and "[REDACTED]" in scrubbed, scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "Basic authentication failed for this endpoint",
        "Bearer authentication required",
        "max_tokens=5 is too small; prompt_tokens: 12",
        "context_length_exceeded: reduce the length of the messages",
        "gpt-mini: 503 Service Unavailable from https://api.example.com/v1/chat (retry in 2s), mail support@x.com",
    ],
)
def test_scrub_leaves_ordinary_text_alone(text: str) -> None:
    assert scrub(text) == text


def test_scrub_is_idempotent() -> None:
    text = "Authorization: Bearer sk-abcdef123456 at https://u:p@h/v1?api_key=zz"
    assert scrub(scrub(text)) == scrub(text)


# -- URL passwords in reprs and names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"https://user:{PASSWORD}@api.example.com/v1", "https://user:***@api.example.com/v1"),
        ("https://tok3n-PLANTED@api.example.com/v1", "https://***@api.example.com/v1"),
        ("https://user:pa/ss-PLANTED@api.example.com/v1", "https://user:***@api.example.com/v1"),
        ("https://:only-PLANTED@api.example.com", "https://***@api.example.com"),
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("not a url", "not a url"),
    ],
)
def test_hide_url_password(url: str, shown: str) -> None:
    assert hide_url_password(url) == shown


def test_deployment_and_snapshot_reprs_hide_the_password() -> None:
    d = Deployment(name="proxied", model="openai/gpt-4o-mini", api_base=f"https://user:{PASSWORD}@proxy/v1",
                   api_key_env="OPENAI_API_KEY")
    assert d.api_base is not None and PASSWORD in d.api_base  # the value itself is what LiteLLM gets
    snap = compile_snapshot([d], "deployments.yaml", [("p.yaml", PolicyFile(routes={"default": Route(
        targets=("proxied",))}, default_route="default"))])
    for text in (repr(d), str(d), repr(snap), str(snap), repr(snap.routes["default"])):
        assert PASSWORD not in text
        assert "user:***@proxy" in text


@pytest.mark.parametrize("store", ["quota", "cache", "history", "quality"])
def test_redis_store_names_and_reprs_hide_the_password(store: str) -> None:
    pytest.importorskip("redis")
    url = f"redis://alice:{PASSWORD}@127.0.0.1:6379/0?prefix=llmr:{uuid.uuid4().hex}:"
    if store == "quota":
        from router.quota.redis import RedisStore

        obj: object = RedisStore.from_url(url)
    elif store == "cache":
        from router.cache.redis import RedisCacheStore

        obj = RedisCacheStore.from_url(url)
    elif store == "history":
        from router.history.redis import RedisHistoryStore

        obj = RedisHistoryStore.from_url(url)
    else:
        from router.quality.redis import RedisQualityStore

        obj = RedisQualityStore(url)
    assert getattr(obj, "name") == "redis://127.0.0.1:6379/0"  # noqa: B009 - the stores share no base type
    assert PASSWORD not in repr(obj) and PASSWORD not in repr(getattr(obj, "_client", None))


def test_url_for_display() -> None:
    assert url_for_display(f"redis://:{PASSWORD}@cache:6380/2?prefix=x") == "redis://cache:6380/2"
    assert PASSWORD not in url_for_display(f"redis://u:{PASSWORD}@cache:notaport/0")


# -- errors as one line per attempt ---------------------------------------------------------------


def failed(deployment: str, kind: str, text: str) -> Attempt:
    return Attempt(deployment=deployment, outcome="error", error_type=kind, error=text)


def test_all_attempts_failed_reads_as_a_header_and_one_line_per_attempt() -> None:
    body = "line one\n  line two " + "x" * 2000
    exc = AllAttemptsFailed(route="default", attempts=[
        failed("a", "unavailable", body),
        Attempt(deployment="b", outcome="skipped", error="circuit open", error_type="circuit_open"),
        failed("c", "auth", "no API key: set the environment variable C_KEY"),
    ])
    lines = error_lines(exc)
    assert lines[0] == "error: route 'default': all 3 attempt(s) failed"
    assert lines[1].startswith("  a -> unavailable: line one line two xxx") and lines[1].endswith("...")
    assert len(lines[1]) == 2 + len("a -> unavailable: ") + ATTEMPT_TEXT_MAX
    assert lines[2:] == ["  b -> circuit_open: circuit open",
                         "  c -> auth: no API key: set the environment variable C_KEY"]
    # The exception's own message stays one bounded line too (logs, span status).
    assert "\n" not in str(exc) and len(str(exc)) < 3 * (ATTEMPT_TEXT_MAX + 40) + 60
    assert "a -> error (unavailable): line one line two" in str(exc)


def test_deadline_exceeded_header() -> None:
    exc = DeadlineExceeded(route="slow", deadline_s=2.5, attempts=[failed("a", "timeout", "timed out")])
    assert error_lines(exc) == ["error: route 'slow': deadline of 2.5s exceeded after 1 attempt(s)",
                                "  a -> timeout: timed out"]


def test_other_errors_print_one_capped_line() -> None:
    lines = error_lines(InvalidRequest("bad\n" + "y" * 5000, deployment="gpt"))
    assert len(lines) == 1 and len(lines[0]) == len("error: ") + ERROR_LINE_MAX
    assert error_lines(RouterError("plain")) == ["error: plain"]


def test_attempt_line_without_text() -> None:
    assert attempt_line(Attempt(deployment="a", outcome="error", error_type="timeout")) == "a -> timeout"


# -- llm-router with no key set -------------------------------------------------------------------


@pytest.fixture
def keyless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A config whose deployments name key variables that are not set; nothing listens at their URL."""
    var_a, var_b = (f"NO_KEY_{uuid.uuid4().hex.upper()}" for _ in range(2))
    (tmp_path / "config").mkdir()
    (tmp_path / "policies").mkdir()
    (tmp_path / "config" / "deployments.yaml").write_text(textwrap.dedent(f"""\
        deployments:
          - {{name: a, model: openai/a, api_key_env: {var_a}, api_base: "http://127.0.0.1:9/v1"}}
          - {{name: b, model: openai/b, api_key_env: {var_b}, api_base: "http://127.0.0.1:9/v1"}}
          - {{name: c, model: openai/c, api_key_env: {var_a}, api_base: "http://127.0.0.1:9/v1"}}
        """))
    (tmp_path / "policies" / "main.yaml").write_text(textwrap.dedent("""\
        default_route: default
        routes:
          default:
            strategy: fallback
            targets: [a, b]
            retry: {attempts: 3, backoff_s: 0, on: [unavailable, timeout, rate_limited, malformed_response]}
            fallbacks: [other]
          other:
            targets: [c]
            retry: {attempts: 3, backoff_s: 0}
        """))
    monkeypatch.chdir(tmp_path)  # no .env of the repository
    for var in ("ROUTER_HEALTH_STORE_URL", "ROUTER_QUOTA_STORE_URL", "ROUTER_DECISION_LOG_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ROUTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("ROUTER_POLICY_DIR", str(tmp_path / "policies"))
    return var_a, var_b


def test_chat_without_a_key_names_the_variable_once_per_deployment(
    keyless: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    var_a, var_b = keyless
    assert main(["chat", "--plain", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: route 'default': all 3 attempt(s) failed",
        f"  a -> auth: no API key: set the environment variable {var_a}",
        f"  b -> auth: no API key: set the environment variable {var_b}",
        f"  c -> auth: no API key: set the environment variable {var_a}",
    ]


def test_chat_in_environment_mode_without_openai_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The original design's variables: OPENAI_API_BASE set, OPENAI_API_KEY forgotten."""
    monkeypatch.chdir(tmp_path)
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ROUTER_HEALTH_STORE_URL", "ROUTER_DECISION_LOG_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ROUTER_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("ROUTER_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    assert main(["chat", "--plain", "hi"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: route 'default': all 1 attempt(s) failed",
        "  openai -> auth: no API key: set the environment variable OPENAI_API_KEY",
    ]


def test_explain_and_validate_never_print_a_url_password(
    keyless: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployments = tmp_path / "config" / "deployments.yaml"
    deployments.write_text(deployments.read_text().replace("http://127.0.0.1:9/v1", f"http://u:{PASSWORD}@h:9/v1"))
    assert main(["explain", "--json", "--prompt", "hi"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["order"] == ["a", "b", "c"] and PASSWORD not in out
    assert main(["explain", "--plain", "--prompt", "hi"]) == 0
    assert main(["validate", "--plain"]) == 0
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    # A rejected file names the field, never the value that holds the password.
    deployments.write_text(deployments.read_text().replace("api_key_env:", "timeout_s: -1, api_key_env:", 1))
    assert main(["validate", "--plain"]) == 1
    captured = capsys.readouterr()
    assert "timeout_s" in captured.out and PASSWORD not in captured.out + captured.err


def test_chat_with_no_key_variable_named_and_none_in_the_environment(
    keyless: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deployment that names no api_key_env leaves the key to LiteLLM, which finds none: still one attempt."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "config" / "deployments.yaml").write_text(
        'deployments:\n  - {name: a, model: openai/a, api_base: "http://127.0.0.1:9/v1"}\n')
    (tmp_path / "policies" / "main.yaml").write_text(
        "default_route: default\nroutes:\n  default:\n    targets: [a]\n"
        "    retry: {attempts: 3, backoff_s: 0, on: [unavailable]}\n")
    assert main(["chat", "--plain", "hi"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: route 'default': all 1 attempt(s) failed", lines
    assert lines[1].startswith("  a -> auth: ") and "OPENAI_API_KEY" in lines[1], lines
