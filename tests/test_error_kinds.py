"""The one error-kind table: every error class has a row, and policies may only retry what can be retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from router import errors
from router.errors import DEFAULT_RETRY_ON, ERROR_CLASSES, ERROR_KINDS, RETRYABLE_KINDS, ConfigError, error_kind
from router.policy.loader import load_model
from router.schema import PolicyFile, Retry

pytestmark = pytest.mark.timeout(30)


def concrete_provider_errors() -> list[type[errors.ProviderError]]:
    """Every ProviderError subclass defined in router.errors, except the two abstract bases."""
    found: list[type[errors.ProviderError]] = []
    todo: list[type[errors.ProviderError]] = [errors.ProviderError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls not in (errors.ProviderError, errors.RetryableError) and cls.__module__ == "router.errors":
            found.append(cls)
    return found


def test_every_provider_error_kind_has_a_row() -> None:
    classes = concrete_provider_errors()
    assert len(classes) >= 10
    missing = sorted(cls.__name__ for cls in classes if cls.kind not in ERROR_KINDS)
    assert missing == []
    assert {cls.kind for cls in classes} == set(ERROR_CLASSES)  # retry.on names map back to classes
    for name, row in ERROR_KINDS.items():
        assert row.name == name


def test_retryable_errors_are_retryable_kinds() -> None:
    for cls in concrete_provider_errors():
        row = ERROR_KINDS[cls.kind]
        if issubclass(cls, errors.RetryableError):
            assert row.retryable and row.falls_back, cls.__name__
    assert DEFAULT_RETRY_ON <= RETRYABLE_KINDS


def test_what_each_kind_does_to_health() -> None:
    # The provider's faults count against its circuit; the caller's and our own do not.
    assert {k for k, row in ERROR_KINDS.items() if row.health == "fault"} == {
        "timeout", "unavailable", "malformed_response", "stream_interrupted"}
    assert ERROR_KINDS["timeout_starved"].health == "neutral" and ERROR_KINDS["timeout_starved"].falls_back
    assert ERROR_KINDS["content_filtered"].health == "neutral" and ERROR_KINDS["content_filtered"].falls_back
    assert "content_filtered" not in DEFAULT_RETRY_ON  # the same provider would refuse again
    assert not ERROR_KINDS["invalid_request"].falls_back and not ERROR_KINDS["invalid_request"].retryable
    assert ERROR_KINDS["rate_limited"].health == "cool_retry_after"
    assert ERROR_KINDS["auth"].health == ERROR_KINDS["not_found"].health == "cool_long"


def test_unknown_kind_counts_as_a_fault_that_falls_back() -> None:
    row = error_kind("something_new")
    assert row.health == "fault" and row.falls_back and not row.retryable
    assert error_kind(None) is row


@pytest.mark.parametrize("kinds", [["auth"], ["bogus"], ["timeout", "invalid_request"], ["timeout_starved"]])
def test_retry_on_refuses_kinds_that_cannot_be_retried(tmp_path: Path, kinds: list[str]) -> None:
    policy = tmp_path / "main.yaml"
    policy.write_text(f"routes:\n  default:\n    targets: [a]\n    retry: {{attempts: 2, on: {kinds}}}\n"
                      .replace("'", ""))
    with pytest.raises(ConfigError) as info:
        load_model(policy, PolicyFile)
    issue = info.value.issues[0]
    assert issue.field == "routes.default.retry.on" and issue.line == 4 and issue.file == str(policy)
    bad = [k for k in kinds if k not in RETRYABLE_KINDS]
    assert all(repr(k) in issue.message for k in bad), issue.message
    assert "retryable kinds are" in issue.message and "'rate_limited'" in issue.message


def test_retry_on_accepts_every_retryable_kind() -> None:
    assert Retry(on=frozenset(RETRYABLE_KINDS)).on == RETRYABLE_KINDS
    assert Retry().on == DEFAULT_RETRY_ON
