"""What a caller may send: one frozen `ChatRequest`, validated before any provider call.

Messages and parameters follow the OpenAI chat schema (roles `system`,
`developer`, `user`, `assistant` with `tool_calls`, `tool` with
`tool_call_id`; content as a string or a list of `text`, `image_url`,
`input_audio` and `file` parts). Every bad input is an
`InvalidRequest` whose `field` names the path (``messages[1].tool_call_id``),
never a raw `TypeError`/`ValueError`. Nothing a caller passes can name an
endpoint or a credential: those come from the deployment config only.

>>> req = build_chat_request("What is 2+2?", {"temperature": 0})
>>> req.messages[0]["role"], req.params["temperature"]
('user', 0.0)
>>> build_chat_request([], {})
Traceback (most recent call last):
...
router.errors.InvalidRequest: messages: must hold at least one message
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter, ValidationError, model_validator

from router.cache.keys import is_deterministic
from router.errors import InvalidRequest
from router.models import LLMMessage

#: Call arguments that would name an endpoint or a credential: refused, whatever their value.
REFUSED_PARAMS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "extra_headers", "headers", "custom_llm_provider",
    "organization", "azure_ad_token", "azure_ad_token_provider", "aws_access_key_id", "aws_secret_access_key",
    "aws_session_token", "aws_region_name", "vertex_credentials", "vertex_project", "vertex_location",
    "client", "http_client", "api_key_env", "mock_response", "num_retries", "max_retries", "timeout",
    "model_list", "litellm_params", "proxy_server_request", "user_api_key", "deployment_id",
})


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TextPart(_Spec):
    type: Literal["text"]
    text: str


class ImageURL(_Spec):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Spec):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Spec):
    data: str = Field(min_length=1)
    format: Literal["wav", "mp3"]


class AudioPart(_Spec):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(_Spec):
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class FilePart(_Spec):
    type: Literal["file"]
    file: FileRef


Part = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
Content = str | list[Part]


class FunctionSpec(_Spec):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(_Spec):
    type: Literal["function"]
    function: FunctionSpec


class ToolCallFunction(_Spec):
    name: str = Field(min_length=1)
    arguments: str


class ToolCallIn(_Spec):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: ToolCallFunction


class SystemMessage(_Spec):
    role: Literal["system"]
    content: Content
    name: str | None = None


class DeveloperMessage(_Spec):
    role: Literal["developer"]
    content: Content
    name: str | None = None


class UserMessage(_Spec):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantIn(_Spec):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> AssistantIn:
        if self.content is None and not self.tool_calls and self.refusal is None:
            raise ValueError("an assistant message needs content, tool_calls or refusal")
        return self


class ToolMessage(_Spec):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantIn | ToolMessage, Field(discriminator="role")
]


class NamedFunction(_Spec):
    name: str = Field(min_length=1)


class NamedToolChoice(_Spec):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(_Spec):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(_Spec):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a 'json_schema' object")
        return self


# Strict numbers: `max_tokens=True` or `seed="7"` is the caller's mistake, not 1 and 7.
Probability = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]
Penalty = Annotated[float, Field(strict=True, ge=-2, le=2, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=1)]


class ChatParams(_Spec):
    """Every standard OpenAI chat parameter the router forwards (None: not sent)."""

    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(strict=True)] | None = None
    top_p: Probability | None = None
    n: Annotated[int, Field(strict=True, ge=1, le=128)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(strict=True, ge=-100, le=100, allow_inf_nan=False)]] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(strict=True, ge=0, le=20)] | None = None
    user: str | None = Field(default=None, max_length=512)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    max_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    temperature: Annotated[float, Field(strict=True, ge=0, le=2, allow_inf_nan=False)] | None = None
    extra_body: dict[str, Any] | None = None

    def check_consistent(self) -> None:
        """Rules across fields; raises `InvalidRequest` naming the field."""
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise InvalidRequest("at most 4 sequences", field="stop")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise InvalidRequest("needs tools", field="tool_choice")
        if self.extra_body:
            refused = sorted(REFUSED_PARAMS & set(self.extra_body))
            if refused:
                raise InvalidRequest("refused: endpoints and credentials come from the deployment config only",
                                     field=f"extra_body.{refused[0]}")


_UNION_TAGS = frozenset(
    {"system", "developer", "user", "assistant", "tool", "text", "image_url", "input_audio", "file"}
)
# How pydantic labels the members of a plain (not discriminated) union in an error's location.
_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "bytes", "dict", "list", "none"})
_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
_PARAM_NAMES = frozenset(ChatParams.model_fields)


@dataclass(frozen=True, eq=False)
class ChatRequest:
    """One validated chat request: `messages` (OpenAI dicts) and `params` (those the caller set).

    Built only by `build_chat_request`, after pydantic has validated every
    message and parameter (`ChatParams` and the message models above); a frozen
    dataclass rather than a model so that building it costs nothing more. The
    router never mutates it. `needs` is the capabilities a deployment must
    declare to serve it.
    """

    messages: tuple[dict[str, Any], ...]
    params: dict[str, Any]
    stream: bool = False
    #: Capabilities: `tools`, `json` (json_schema), `vision` (image parts), `audio` (audio parts).
    needs: frozenset[str] = frozenset()

    @staticmethod
    def capabilities(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> frozenset[str]:
        """What a deployment must declare to serve these messages and parameters."""
        needs: set[str] = set()
        if params.get("tools"):
            needs.add("tools")
        fmt = params.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            needs.add("json")
        for m in messages:
            content = m.get("content")
            if isinstance(content, list):
                for part in content:
                    kind = part.get("type")
                    if kind == "image_url":
                        needs.add("vision")
                    elif kind == "input_audio":
                        needs.add("audio")
        return frozenset(needs)

    @property
    def n(self) -> int:
        return int(self.params.get("n") or 1)

    @property
    def max_output_tokens(self) -> int | None:
        """The output budget the caller set (`max_completion_tokens` wins over `max_tokens`)."""
        value = self.params.get("max_completion_tokens") or self.params.get("max_tokens")
        return int(value) if value is not None else None

    @property
    def deterministic(self) -> bool:
        """True for temperature 0 or a fixed seed (what a response cache may reuse)."""
        return is_deterministic(self.params)


MessagesIn = str | Sequence[LLMMessage | Mapping[str, Any]]


def build_chat_request(messages: object, params: Mapping[str, Any], *, stream: bool = False) -> ChatRequest:
    """Validate `messages` (a string: one user message) and `params` into a `ChatRequest`.

    Raises `InvalidRequest` naming the field for any bad input, including a
    refused parameter (`api_base`, `api_key`, ...) or one the router does not
    know (use `extra_body` for provider-specific body fields).
    """
    unknown = set(params) - _PARAM_NAMES
    if unknown:
        name = sorted(unknown)[0]
        if name in REFUSED_PARAMS:
            raise InvalidRequest("refused: endpoints and credentials come from the deployment config only",
                                 field=name)
        raise InvalidRequest("unknown parameter; provider-specific body fields go in extra_body", field=name)
    raw = _raw_messages(messages)
    if not raw:
        raise InvalidRequest("must hold at least one message", field="messages")
    given = {k: v for k, v in params.items() if v is not None}
    plain = _plain_text(raw)
    if plain and not given:
        # The common case (text messages, no parameters) needs no schema walk: ~4 µs saved a call.
        return ChatRequest(messages=tuple(raw), params={}, stream=stream)
    if not plain:
        try:
            _MESSAGES.validate_python(raw)
        except ValidationError as exc:
            raise _invalid(exc, "messages") from None
    wire: dict[str, Any] = {}
    if given:
        try:
            checked = ChatParams.model_validate(given)
        except ValidationError as exc:
            raise _invalid(exc, "") from None
        checked.check_consistent()
        # What the caller passed, now known valid, is what goes on the wire (as the OpenAI SDK
        # sends it); dumping the model again would cost ~3 µs and change nothing the provider sees.
        wire = given
    _check_encodable([] if plain else raw, wire)
    return ChatRequest(messages=tuple(raw), params=wire, stream=stream,
                       needs=ChatRequest.capabilities(raw, wire))


_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})


def _plain_text(raw: list[dict[str, Any]]) -> bool:
    """True when every message is just a role and a string that encodes as UTF-8."""
    for m in raw:
        content = m.get("content")
        if len(m) != 2 or type(content) is not str or m.get("role") not in _PLAIN_ROLES:
            return False
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            return False  # the full check names the field
    return True


def _raw_messages(messages: object) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if type(messages) is list and all(type(m) is dict for m in messages):
        return [m.copy() for m in messages]  # the common case, without the ABC checks below (~2 µs)
    if isinstance(messages, Mapping) or not isinstance(messages, Sequence):
        raise InvalidRequest(f"expected a string or a list of messages, got {type(messages).__name__}",
                             field="messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if isinstance(m, LLMMessage):
            out.append(m.as_dict())
        elif isinstance(m, Mapping):
            out.append(dict(m))
        else:
            raise InvalidRequest(f"expected a message dict, got {type(m).__name__}", field=f"messages[{i}]")
    return out


def _invalid(exc: ValidationError, prefix: str) -> InvalidRequest:
    # The deepest location is the most specific (a union's other branches fail at its top).
    err = max(exc.errors(include_url=False, include_input=False), key=lambda e: len(e["loc"]))
    path = prefix
    after_index = False
    for part in err["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
            after_index = True
            continue
        if "[" in part or part in _TYPE_LABELS or part[:1].isupper():
            continue  # a union member's label (`str`, `list[...]`, a model's class name), not a field
        if after_index and part in _UNION_TAGS:
            after_index = False
            continue  # a discriminator's tag, not a field
        path += f".{part}" if path else part
        after_index = False
    return InvalidRequest(err["msg"], field=path)


def _check_encodable(raw: list[dict[str, Any]], params: dict[str, Any]) -> None:
    """What cannot be sent as UTF-8 JSON (a lone surrogate, a NaN in a tool schema) is the
    caller's mistake, found here before any call: not an outage to retry elsewhere."""
    if not raw and all(type(v) in (int, float, bool) for v in params.values()):
        return  # numbers were range-checked by the schema (no NaN); nothing here can fail to encode
    try:
        json.dumps([raw, params], ensure_ascii=False, allow_nan=False).encode("utf-8")
        return
    except (UnicodeEncodeError, TypeError, ValueError):
        pass
    for i, m in enumerate(raw):
        for key, value in m.items():
            _encodable(value, f"messages[{i}].{key}")
    for key, value in params.items():
        _encodable(value, key)


def _encodable(value: object, field: str) -> None:
    """Raise naming the deepest path (``messages[0].content[1].text``) that cannot be encoded."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        reason = "contains a lone surrogate; text must be valid Unicode"
    except (TypeError, ValueError) as exc:
        reason = "contains " + ("NaN or infinity" if "out of range" in str(exc).lower() else "a value that is not JSON")
    else:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _encodable(item, f"{field}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _encodable(item, f"{field}[{i}]")
    raise InvalidRequest(reason, field=field)  # the value itself, or a key of this mapping


__all__ = ["REFUSED_PARAMS", "ChatParams", "ChatRequest", "MessagesIn", "build_chat_request"]
