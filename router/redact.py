"""Blank out credentials in text that leaves the process: error messages, span attributes.

Provider SDKs echo URLs, headers and sometimes keys in their error text; the
backend passes every provider message through `scrub` before it becomes one
of our errors, and tracing does the same before anything is exported. The
backend also replaces the deployment's own key wherever it appears; these
patterns catch what it cannot know (another key, a proxy's password, a token
an upstream quoted back).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_R = "[REDACTED]"
# A value after a credential-looking name: up to a quote, space or separator; never one already blanked.
_VALUE = r"(?!\[REDACTED\])[^\s\"'&,;]+"

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # userinfo of a URL: https://user:password@host, https://token@host, and a raw "/" in the
    # password (https://user:pa/ss@host); an "@" later in a path over-redacts, the safe side
    (re.compile(r"(?<=://)[^\s@\"'<>]+@"), f"{_R}@"),
    # an Authorization header in any scheme (Bearer, Basic, Token, Digest, ...), as text or JSON
    (re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?![\w-]*\s*\[REDACTED\])"
                r"((?:bearer|basic|token|digest|apikey|key|sharedkey|aws4-hmac-sha256)\s+)?" + _VALUE),
     rf"\1\2{_R}"),
    # a scheme and its credential without the header name; a credential has a digit or is long
    # ("Basic dXNlcjpwdzE=", "Bearer eyJ..."), which spares "Basic authentication failed"
    (re.compile(r"(?i)\b(bearer|basic)\s+(?!\[REDACTED\])"
                r"(?=[A-Za-z._~+/=-]*[0-9]|[A-Za-z0-9._~+/=-]{24})[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {_R}"),
    # name=value and "name": "value" for anything named like a credential (api-key, x-goog-api-key,
    # aws_secret_access_key, client_secret, access_token, password, sig, ...)
    (re.compile(r"(?i)\b([\w-]*(?:api[_-]?key|access[_-]?key|secret|token|password|passwd|pwd|signature|sig|key)"
                r"[\"']?\s*[:=]\s*[\"']?)" + _VALUE),
     rf"\1{_R}"),
    # key shapes providers use, wherever they appear: sk-/rk-/pk- (OpenAI, Anthropic sk-ant-),
    # Google AIza..., AWS access key ids, JSON web tokens (Azure AD bearer tokens)
    (re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_-]{8,}|\bAIza[0-9A-Za-z_-]{20,}|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
                r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), _R),
)


def scrub(text: str) -> str:
    """Blank out credentials a message might carry.

    >>> scrub("401 at https://bob:pw@api.example.com/v1?api_key=abc with key sk-abcdef123456")
    '401 at https://[REDACTED]@api.example.com/v1?api_key=[REDACTED] with key [REDACTED]'
    >>> scrub("rejected credentials 'Basic dXNlcjpodW50ZXIy' for this deployment")
    "rejected credentials 'Basic [REDACTED]' for this deployment"
    """
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def url_for_display(url: str) -> str:
    """`url` as logs and store names show it: scheme, host, port and path; no userinfo, no query.

    >>> url_for_display("redis://:hunter2@cache.internal:6380/2?prefix=llmr:")
    'redis://cache.internal:6380/2'
    """
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # an unparsable port: show nothing that might be a secret
        return scrub(url.split("?", 1)[0])
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
