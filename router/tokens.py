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
import os
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path


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


def count_tokens(messages: Sequence[dict[str, str]]) -> int:
    """Tokens a chat prompt takes, as LiteLLM counts them (a character estimate if no tokenizer)."""
    encode = _encode()
    if encode is None:
        return sum(4 + len(m.get("content", "")) // 4 for m in messages) + 3
    return sum(4 + len(encode(m.get("content", ""))) for m in messages) + 3
