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
from typing import Any

__all__ = [
    "chunk_text",
    "content_kinds",
    "embed_text",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "message_text",
    "message_units",
    "prompt_units",
    "reply_tokens",
    "sample_length",
    "sample_ttft_s",
    "split_words",
]

MESSAGE_OVERHEAD_TOKENS = 4
CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 85  # OpenAI's price of a low-detail image
IMAGE_TOKENS_HIGH = 765  # a 1024x1024 image at high detail: 85 + 4 tiles of 170
MEDIA_MIN_TOKENS = 10
MEDIA_CHARS_PER_TOKEN = 64  # base64 characters of audio or file data per token

_VOCABULARY_TEXT = (
    "the model routes each request to a deployment that fits its policy while "
    "latency budget quota and health decide which provider answers first so "
    "tenants see steady service even when one backend slows down or fails and "
    "fallback keeps the reply flowing with tokens streamed back in order under "
    "a deadline the router tracks carefully for every call"
)
_VOCABULARY = tuple(_VOCABULARY_TEXT.split())

_CANNED_ANSWERS = {"What is 2+2?": "4"}
# First words of a reply to a prompt carrying media, so tests can see the part arrived.
_MEDIA_LEADS = {
    "image_url": ["the", "image", "shows"],
    "input_audio": ["the", "audio", "says"],
    "file": ["the", "file", "says"],
}


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


def chunk_text(text: str) -> list[str]:
    """Cut a text every four characters: one pseudo-token per piece.

    Example:
        >>> chunk_text('{"a": 1}')
        ['{"a"', ': 1}']
    """
    return [text[i : i + CHARS_PER_TOKEN] for i in range(0, len(text), CHARS_PER_TOKEN)]


def _digest(value: object) -> str:
    return hashlib.blake2b(str(value).encode(), digest_size=6).hexdigest()


def _part_units(part: Mapping[str, Any]) -> list[str]:
    """Tokens of one non-text content part: a fixed price per image, a size-based one otherwise."""
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        detail = image.get("detail") if isinstance(image, Mapping) else None
        count = IMAGE_TOKENS_HIGH if detail == "high" else IMAGE_TOKENS
        return [f"<image:{_digest(url)}>"] * count
    if kind == "input_audio":
        audio = part.get("input_audio")
        data = str(audio.get("data", "")) if isinstance(audio, Mapping) else ""
        return [f"<audio:{_digest(data)}>"] * max(MEDIA_MIN_TOKENS, len(data) // MEDIA_CHARS_PER_TOKEN)
    if kind == "file":
        file = part.get("file")
        data = str(file.get("file_data") or file.get("file_id") or "") if isinstance(file, Mapping) else ""
        return [f"<file:{_digest(data)}>"] * max(IMAGE_TOKENS, len(data) // MEDIA_CHARS_PER_TOKEN)
    return []


def content_kinds(content: object) -> set[str]:
    """The ``type`` of every part of a list content (``{"text"}`` for a string).

    Example:
        >>> sorted(content_kinds([{"type": "text", "text": "a"}, {"type": "image_url"}]))
        ['image_url', 'text']
    """
    if isinstance(content, str):
        return {"text"}
    if isinstance(content, list):
        return {str(part.get("type")) for part in content if isinstance(part, Mapping)}
    return set()


def message_units(message: Mapping[str, object]) -> list[str]:
    """The pseudo-tokens of one message; their count is its prompt tokens.

    Four tokens of overhead, the text cut every four characters, a block per
    image (85, or 765 with ``detail: high``), audio or file part, and the
    JSON of any ``tool_calls``. Used for counting and for prompt-cache prefixes.

    Example:
        >>> len(message_units({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}))
        89
    """
    units = [f"<|{message.get('role')}|>", "<|>", "<|>", "<|>"]
    content = message.get("content")
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, Mapping):
                continue
            text = part.get("text")
            units += chunk_text(text) if isinstance(text, str) else _part_units(part)
    else:
        units += chunk_text(message_text(content))
    tool_calls = message.get("tool_calls")
    if tool_calls:
        units += chunk_text(json.dumps(tool_calls, sort_keys=True, separators=(",", ":")))
    return units


def prompt_units(messages: Sequence[Mapping[str, object]], tools: object = None) -> list[str]:
    """Pseudo-tokens of a whole prompt: the tools' JSON first (as OpenAI renders them), then the messages.

    Example:
        >>> len(prompt_units([{"role": "user", "content": "hi"}]))
        5
    """
    units = chunk_text(json.dumps(tools, sort_keys=True, separators=(",", ":"))) if tools else []
    for message in messages:
        units += message_units(message)
    return units


def estimate_prompt_tokens(messages: Sequence[Mapping[str, object]], tools: object = None) -> int:
    """Approximate prompt tokens: ``4 + ceil(chars / 4)`` per message, plus media and tools.

    Example:
        >>> estimate_prompt_tokens([{"role": "system", "content": ""}, {"content": "hi"}])
        9
    """
    return len(prompt_units(messages, tools))


def split_words(text: str) -> list[str]:
    """Cut a text into word tokens whose concatenation is the text.

    Example:
        >>> split_words("a bc  d")
        ['a', ' bc', ' ', ' d']
    """
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]] if text else []


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
    ``length`` words drawn from a fixed vocabulary, seeded by the request. A
    last user message with an image (audio, file) starts "The image shows"
    ("The audio says", "The file says").

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
    last_kinds = next((content_kinds(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), set())
    for kind, lead in _MEDIA_LEADS.items():
        if kind in last_kinds:
            words = lead + words[len(lead) :]  # keeps the length when it is long enough
            break
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
