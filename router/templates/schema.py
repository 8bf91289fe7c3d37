"""The prompt file vocabulary: frozen pydantic models of what ops write in `policies/prompts/*.yaml`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PromptRole = Literal["system", "developer", "user", "assistant"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class PromptDefaults(BaseModel):
    """Request parameters a prompt suggests; the caller's own arguments win."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    route: str | None = None
    model: str | None = Field(default=None, description="a model alias of the policy")
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _known_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") not in ("text", "json_object", "json_schema"):
            raise ValueError("type must be text, json_object or json_schema")
        return value


class PromptMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: PromptRole
    content: str = Field(description="a Jinja2 template")
    name: str | None = None


class PromptTemplate(BaseModel):
    """One version of one prompt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME, max_length=128)
    version: str = Field(default="1", pattern=_NAME, max_length=64)
    description: str = ""
    variables: tuple[str, ...] | None = None
    defaults: PromptDefaults = PromptDefaults()
    messages: tuple[PromptMessage, ...] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _number_is_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("variables")
    @classmethod
    def _identifiers(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        bad = [v for v in value or () if not v.isidentifier() or v.startswith("_")]
        if bad:
            raise ValueError(f"not variable names: {', '.join(bad)}")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a variable is listed twice")
        return value


class PromptsFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompts: tuple[PromptTemplate, ...] = ()
