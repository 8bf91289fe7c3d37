"""Cache keys, batch splitting and the route's `cache:` block: pure functions, no store."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from router.cache import (
    MAX_TEXT_KEY,
    CacheKeyError,
    cache_key,
    canonical_json,
    chat_key_frame,
    chat_key_in_frame,
    embedding_key,
    is_deterministic,
    key_digest,
    key_in_frame,
    partition_for,
    split_batch,
)
from router.schema import CacheSpec, Route

pytestmark = pytest.mark.timeout(10)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def key(request: dict[str, Any] | None = None, **kw: Any) -> str:
    args: dict[str, Any] = {"partition": "acme", "route": "default",
                            "deployments": ["gpt-4o-mini", "claude-haiku"]} | kw
    return cache_key(request=request or {"messages": MESSAGES, "temperature": 0}, **args)


class TestCanonicalKeys:
    @pytest.mark.parametrize("request_doc", [
        {"messages": MESSAGES, "temperature": 0},
        {"messages": ({"role": "user", "content": "héllo \u2028 \"quoted\" 🦜"},), "params": {"top_p": 0.1,
                                                                                       "seed": 7}, "stream": False},
        {"messages": ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}), "params": {},
         "stream": True},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
         "params": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"b": 1e-07, "a": None}}}],
                    "logprobs": True}, "stream": True},
        # Every scalar kind, written out without the encoder: keys sorted, 0 apart from 0.0 and false.
        {"messages": MESSAGES, "stream": False,
         "params": {"temperature": 0.0, "seed": 10**20, "n": -1, "logprobs": False, "user": "é \"q\" \u2028 🦜",
                    "stop": None, "top_p": 1e-07, "presence_penalty": 1e300, "max_tokens": 0, "é": True}},
        {"messages": MESSAGES, "stream": False, "params": {"temperature": 0, "stop": ["a", "b"]}},
    ])
    def test_a_key_in_a_precomputed_frame_is_the_same_key(self, request_doc: dict[str, Any]) -> None:
        head, tail = chat_key_frame(partition="acme", route="default",
                                    deployments=["gpt-4o-mini", "claude-haiku", "gpt-4o-mini"])
        assert key_in_frame(head, tail, request_doc) == key(request_doc)
        if "stream" in request_doc:  # the router's own request shape
            assert chat_key_in_frame(head, tail, request_doc["messages"], request_doc["params"],
                                     request_doc["stream"]) == key(request_doc)

    def test_a_non_finite_number_is_refused_on_the_fast_path_too(self) -> None:
        head, tail = chat_key_frame(partition="acme", route="default", deployments=["a"])
        with pytest.raises(ValueError):
            chat_key_in_frame(head, tail, MESSAGES, {"temperature": math.nan}, False)

    def test_dict_order_and_deployment_order_do_not_matter(self) -> None:
        reordered = {"temperature": 0, "messages": [{"content": m["content"], "role": m["role"]}
                                                    for m in MESSAGES]}
        assert key() == key(reordered)
        assert key() == key(deployments=["claude-haiku", "gpt-4o-mini", "gpt-4o-mini"])

    def test_a_short_key_is_the_canonical_text_itself(self) -> None:
        doc = json.loads(key())
        assert doc["request"]["messages"] == MESSAGES and doc["partition"] == "acme"
        assert len(key()) <= MAX_TEXT_KEY

    def test_a_long_key_is_a_sha256_digest(self) -> None:
        messages = [{"role": "user", "content": "x" * MAX_TEXT_KEY}]
        long_request: dict[str, Any] = {"messages": messages, "temperature": 0}
        long_key = key(long_request)
        assert long_key.startswith("sha256:") and len(long_key) == 71
        int(long_key.removeprefix("sha256:"), 16)
        other = key({"messages": [{"role": "user", "content": "x" * MAX_TEXT_KEY + "y"}], "temperature": 0})
        assert other.startswith("sha256:") and other != long_key
        head, tail = chat_key_frame(partition="acme", route="default", deployments=["gpt-4o-mini", "claude-haiku"])
        assert chat_key_in_frame(head, tail, messages, {"temperature": 0}, False) == key(
            {"messages": messages, "params": {"temperature": 0}, "stream": False})
        assert key_digest(long_key) != key_digest(key()) and len(key_digest(key())) == 64

    @pytest.mark.parametrize("change", [
        {"temperature": 0.5},
        {"max_tokens": 10},
        {"seed": 1},
        {"messages": [*MESSAGES[:1], {"role": "user", "content": "hi!"}]},
        {"messages": MESSAGES[::-1]},  # message order is meaning, not layout
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
    ])
    def test_a_changed_parameter_changes_the_key(self, change: dict[str, Any]) -> None:
        assert key({"messages": MESSAGES, "temperature": 0} | change) != key()

    def test_route_and_deployments_separate_keys(self) -> None:
        assert key(route="other") != key()
        assert key(deployments=["gpt-4o-mini"]) != key()

    def test_tenant_partition_separates_unless_shared(self) -> None:
        assert key(partition="globex") != key(partition="acme")
        shared = [partition_for(t, shared_across_tenants=True) for t in ("acme", "globex")]
        assert shared == ["*", "*"]
        assert key(partition=shared[0]) == key(partition=shared[1]) != key()
        assert partition_for("acme", shared_across_tenants=False) == "acme"

    def test_true_is_not_one_and_int_is_not_float(self) -> None:
        assert key({"messages": MESSAGES, "logprobs": True}) != key({"messages": MESSAGES, "logprobs": 1})
        assert canonical_json([1, 1.0, 0.1, 1e300]) == "[1,1.0,0.1,1e+300]"

    def test_canonical_json_is_compact_sorted_and_keeps_unicode(self) -> None:
        assert canonical_json({"b": (1, 2), "a": {"z": None, "é": "ü"}}) == '{"a":{"z":null,"é":"ü"},"b":[1,2]}'

    @pytest.mark.parametrize(("request_", "path"), [
        ({"messages": [{"role": "user", "content": b"hi"}]}, "request.messages[0].content"),
        ({"stop": {"a", "b"}}, "request.stop"),
        ({"temperature": math.nan}, "request.temperature"),
        ({"logit_bias": {1: 2}}, "request.logit_bias"),
        ({"response_format": object()}, "request.response_format"),
    ])
    def test_non_json_values_are_rejected_naming_where(self, request_: dict[str, Any], path: str) -> None:
        with pytest.raises(CacheKeyError) as exc:
            key(request_)
        assert exc.value.path == path
        assert str(exc.value).startswith(path + ":")
        assert isinstance(exc.value, TypeError)

    def test_embedding_keys_are_per_text_and_params(self) -> None:
        def ek(text: str, **params: Any) -> str:
            return embedding_key(partition="acme", route="emb", text=text,
                                 deployments=["e1"], params=params)

        assert ek("a") == ek("a") != ek("b")
        assert ek("a", dimensions=256) != ek("a", dimensions=512) != ek("a")
        assert embedding_key(partition="globex", route="emb", text="a", deployments=["e1"]) != ek("a")

    def test_deterministic_requests(self) -> None:
        assert is_deterministic({"temperature": 0})
        assert is_deterministic({"temperature": 0.0, "max_tokens": 5})
        assert is_deterministic({"temperature": 1.0, "seed": 7})
        assert not is_deterministic({"temperature": 0.2})
        assert not is_deterministic({})  # the provider's default temperature is not 0
        assert not is_deterministic({"temperature": False})


class TestSplitBatch:
    def test_only_missing_keys_are_computed_and_order_is_kept(self) -> None:
        plan = split_batch(["a", "b", "c", "d"], {"b": "B", "d": "D"})
        assert plan.missing == (0, 2)
        assert plan.assemble(["A", "C"]) == [("A", False), ("B", True), ("C", False), ("D", True)]

    def test_a_key_repeated_in_a_batch_is_computed_once(self) -> None:
        plan = split_batch(["x", "y", "x", "x"], dict[str, str]())
        assert plan.missing == (0, 1)
        assert [v for v, _ in plan.assemble(["X", "Y"])] == ["X", "Y", "X", "X"]

    def test_all_cached_needs_nothing(self) -> None:
        plan = split_batch(["a", "a"], {"a": 1})
        assert plan.missing == ()
        assert plan.assemble([]) == [(1, True), (1, True)]

    def test_wrong_number_of_computed_items_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="2 items were missing but 1"):
            split_batch(["a", "b"], dict[str, str]()).assemble(["A"])


class TestCacheSpec:
    def test_off_by_default_on_every_route(self) -> None:
        route = Route(targets=("a",))
        assert route.cache == CacheSpec()
        assert (route.cache.mode, route.cache.ttl_s) == ("off", 3600.0)
        assert route.cache.deterministic_only and not route.cache.shared_across_tenants
        assert not route.cache.reads and not route.cache.writes

    @pytest.mark.parametrize(("mode", "reads", "writes"), [
        ("read_write", True, True), ("read_only", True, False), ("write_only", False, True),
    ])
    def test_modes(self, mode: str, reads: bool, writes: bool) -> None:
        route = Route.model_validate({"targets": ["a"], "cache": {"mode": mode, "ttl_s": 60}})
        assert (route.cache.reads, route.cache.writes, route.cache.ttl_s) == (reads, writes, 60.0)

    @pytest.mark.parametrize(("cache", "field"), [
        ({"ttl_s": 0}, "cache.ttl_s"),
        ({"ttl_s": -1}, "cache.ttl_s"),
        ({"ttl_s": math.inf}, "cache.ttl_s"),
        ({"ttl_s": math.nan}, "cache.ttl_s"),
        ({"mode": "sometimes"}, "cache.mode"),
        ({"tll_s": 5}, "cache.tll_s"),
    ])
    def test_bad_values_name_their_field(self, cache: dict[str, Any], field: str) -> None:
        with pytest.raises(ValidationError) as exc:
            Route.model_validate({"targets": ["a"], "cache": cache})
        assert [".".join(map(str, e["loc"])) for e in exc.value.errors()] == [field]

    def test_frozen(self) -> None:
        with pytest.raises(ValidationError):
            CacheSpec().mode = "read_write"  # type: ignore[misc]
