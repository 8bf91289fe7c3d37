"""`config/env.example` names every setting: ops read it to learn what they can set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.settings import RouterSettings

pytestmark = pytest.mark.timeout(30)

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "env.example"


def test_env_example_names_every_setting() -> None:
    named = {m.group(1).lower() for m in re.finditer(r"\bROUTER_([A-Z_]+?)(?:__[A-Z_]+)?=", ENV_EXAMPLE.read_text())}
    missing = sorted(set(RouterSettings.model_fields) - named)
    assert not missing, f"config/env.example does not mention {missing}"
