"""Prompt token counting with the tokenizer LiteLLM bundles, without importing LiteLLM.

LiteLLM ships tiktoken's `cl100k_base` file so that counting works offline;
this module points tiktoken at that file (as LiteLLM itself does when
imported) and counts chat messages the way `litellm.token_counter` does:
3 tokens per message, 1 for the role, the content, and 3 to prime the reply.
`explain` and the router thus count the same way, and neither pays for
`import litellm` (~2.7 s) or `token_counter`'s overhead (~130 us for a short
prompt; the encoding alone takes ~17 us).

>>> count_tokens([{"role": "user", "content": "hi"}])
8
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from router.models import AssistantMessage, Usage


@cache
def _encode() -> Callable[[str], list[int]] | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    # The same default LiteLLM sets on import (its issue #1071): tiktoken reads the bundled copy.
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base").encode_ordinary
    except Exception:  # no bundled file and no network: fall back to the estimate
        return None


#: What an image part costs at OpenAI's "low" detail; a fair floor for the estimate.
IMAGE_TOKENS = 85


def count_tokens(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None) -> int:
    """Tokens a chat prompt takes, as LiteLLM counts them (a character estimate if no tokenizer).

    Text parts and tool calls are counted as text, each image or audio part as
    `IMAGE_TOKENS`, and `tools` as their JSON.
    """
    count = _counter()
    total = 3
    for m in messages:
        total += 4 + _content_tokens(m.get("content"), count)
        calls = m.get("tool_calls")
        if calls:
            for call in calls:
                fn = call.get("function") or {}
                total += 3 + count(str(fn.get("name", ""))) + count(str(fn.get("arguments", "")))
    if tools:
        total += count(json.dumps(list(tools), separators=(",", ":"), ensure_ascii=False))
    return total


def estimate_usage(prompt_tokens: int, message: AssistantMessage) -> Usage:
    """Usage a provider did not report: the prompt as counted, the answer from its text and tool calls."""
    out = count_text(message.content or "")
    for call in message.tool_calls or ():
        out += 3 + count_text(call.function.name) + count_text(call.function.arguments)
    return Usage(input_tokens=prompt_tokens, output_tokens=max(out, 1), estimated=True)


def count_text(text: str) -> int:
    """Tokens in one piece of text (an answer, a tool call's arguments)."""
    return _counter()(text)


#: Texts up to this many characters have their count remembered (`COUNT_CACHE_ENTRIES` of them, a few
#: MiB at most): a system prompt or a conversation's earlier turns come back on every request.
COUNT_CACHE_CHARS = 4096
COUNT_CACHE_ENTRIES = 1024


@cache
def _counter() -> Callable[[str], int]:
    encode = _encode()
    if encode is None:
        return lambda text: len(text) // 4

    @lru_cache(maxsize=COUNT_CACHE_ENTRIES)
    def remembered(text: str) -> int:
        return len(encode(text))

    def count(text: str) -> int:
        return remembered(text) if len(text) <= COUNT_CACHE_CHARS else len(encode(text))
    return count


def _content_tokens(content: object, count: Callable[[str], int]) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    total = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                total += count(str(part.get("text", "")))
            else:
                total += IMAGE_TOKENS
    return total
