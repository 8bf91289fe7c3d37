"""Blank out credentials in text that leaves the process: error messages, span attributes.

Provider SDKs echo URLs, headers and sometimes keys in their error text; the
backend passes every provider message through `scrub` before it becomes one
of our errors, and tracing does the same before anything is exported.
"""

from __future__ import annotations

import re

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<=://)[^/\s@]+@"), "[REDACTED]@"),
    (re.compile(r"(?i)\bbearer\s+[^\s\"',;]+"), "Bearer [REDACTED]"),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|x-api-key|key|access_token|token|sig|signature|password|secret)"
            r"([\"']?\s*[:=]\s*[\"']?)(?!\[REDACTED\])[^\s\"'&,;]+"
        ),
        r"\1\2[REDACTED]",
    ),
    (re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{8,}|\bAIza[0-9A-Za-z_-]{20,}"), "[REDACTED]"),
)


def scrub(text: str) -> str:
    """Blank out credentials a message might carry.

    >>> scrub("401 at https://bob:pw@api.example.com/v1?api_key=abc with key sk-abcdef123456")
    '401 at https://[REDACTED]@api.example.com/v1?api_key=[REDACTED] with key [REDACTED]'
    """
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text
