"""Deterministic content for the simulator: token counts, replies, embeddings.

Everything here is a pure function of its arguments, so the same request to the
same server seed always gets the same reply and the same usage numbers.

Token counting is a cheap approximation, not a real tokenizer: each message
costs ``4 + ceil(len(text) / 4)`` tokens, where ``text`` is the string content
or the concatenated ``text`` parts of a list content. A reply token is one word
of a small built-in vocabulary.

Example:
    >>> estimate_prompt_tokens([{"role": "user", "content": "What is 2+2?"}])  # 4 + ceil(12 / 4)
    7
    >>> question = [{"role": "user", "content": "What is 2+2?"}]
    >>> reply_tokens(seed=7, model="m", messages=question, length=10)
    ['4']
    >>> len(embed_text("hello", model="m", dim=8))
    8
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
from collections.abc import Mapping, Sequence

__all__ = [
    "embed_text",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "message_text",
    "reply_tokens",
    "sample_length",
    "sample_ttft_s",
]

MESSAGE_OVERHEAD_TOKENS = 4
CHARS_PER_TOKEN = 4

_VOCABULARY_TEXT = (
    "the model routes each request to a deployment that fits its policy while "
    "latency budget quota and health decide which provider answers first so "
    "tenants see steady service even when one backend slows down or fails and "
    "fallback keeps the reply flowing with tokens streamed back in order under "
    "a deadline the router tracks carefully for every call"
)
_VOCABULARY = tuple(_VOCABULARY_TEXT.split())

_CANNED_ANSWERS = {"What is 2+2?": "4"}


def message_text(content: object) -> str:
    """Return the text of an OpenAI message ``content`` (string or parts list).

    Example:
        >>> message_text([{"type": "text", "text": "a"}, {"type": "image_url"}, {"text": "b"}])
        'ab'
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def estimate_text_tokens(text: str) -> int:
    """Approximate the token count of a bare text (embeddings input).

    Example:
        >>> estimate_text_tokens("abcde")
        2
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: Sequence[Mapping[str, object]]) -> int:
    """Approximate prompt tokens: ``4 + ceil(chars / 4)`` per message.

    Example:
        >>> estimate_prompt_tokens([{"role": "system", "content": ""}, {"content": "hi"}])
        9
    """
    return sum(
        MESSAGE_OVERHEAD_TOKENS + estimate_text_tokens(message_text(message.get("content")))
        for message in messages
    )


def _request_seed(seed: int, model: str, messages: Sequence[Mapping[str, object]]) -> int:
    key = json.dumps([seed, model, messages], sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def sample_length(
    output_tokens: tuple[float, float] | int,
    seed: int,
    model: str,
    messages: Sequence[Mapping[str, object]],
) -> int:
    """Pick the reply length for one request: fixed, or a clamped normal draw.

    The draw is seeded by the request, so asking twice gives the same length.

    Example:
        >>> sample_length(5, seed=1, model="m", messages=[])
        5
        >>> sample_length((10, 0), seed=1, model="m", messages=[])
        10
    """
    if isinstance(output_tokens, int):
        return max(1, output_tokens)
    mean, stddev = output_tokens
    if stddev == 0:
        return max(1, round(mean))
    rng = random.Random(_request_seed(seed, model, messages))
    return max(1, round(rng.gauss(mean, stddev)))


def reply_tokens(
    seed: int, model: str, messages: Sequence[Mapping[str, object]], length: int
) -> list[str]:
    """Return the reply as a list of tokens whose concatenation is the text.

    The last user message "What is 2+2?" is answered "4"; anything else gets
    ``length`` words drawn from a fixed vocabulary, seeded by the request.

    Example:
        >>> "".join(reply_tokens(seed=1, model="m", messages=[], length=3)).count(" ")
        2
    """
    last_user = next(
        (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
        None,
    )
    if last_user is not None and last_user.strip() in _CANNED_ANSWERS:
        return [_CANNED_ANSWERS[last_user.strip()]]
    rng = random.Random(_request_seed(seed, model, messages) ^ 0x5EED)
    words = [rng.choice(_VOCABULARY) for _ in range(length)]
    if not words:
        return []
    words[0] = words[0].capitalize()
    words[-1] += "."
    return [words[0]] + [" " + word for word in words[1:]]


def sample_ttft_s(ttft_ms: tuple[float, float], rng: random.Random) -> float:
    """Draw a time to first token in seconds from (mean, stddev) ms, clamped >= 0.

    Example:
        >>> sample_ttft_s((20, 0), random.Random(0))
        0.02
    """
    mean, stddev = ttft_ms
    if stddev == 0:
        return max(0.0, mean) / 1000
    return max(0.0, rng.gauss(mean, stddev)) / 1000


def embed_text(text: str, model: str, dim: int) -> list[float]:
    """Return a unit-length vector derived from a hash of ``model`` and ``text``.

    Example:
        >>> vector = embed_text("hello", model="m", dim=16)
        >>> round(sum(x * x for x in vector), 6)
        1.0
        >>> vector == embed_text("hello", model="m", dim=16)
        True
    """
    raw = hashlib.shake_256(f"{model}\x00{text}".encode()).digest(2 * dim)
    values = [v / 32767.5 - 1.0 for v in struct.unpack(f">{dim}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
