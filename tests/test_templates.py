"""Prompt templates: YAML schema, sandboxed rendering, load-time validation, live reload."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from router.errors import ConfigError, InvalidRequest
from router.templates import (
    PromptRenderError,
    TemplateSet,
    TemplateSource,
    load_templates,
)

pytestmark = pytest.mark.timeout(20)

REPO = Path(__file__).resolve().parent.parent

SUMMARISE = """\
prompts:
  - name: summarise
    version: "1"
    variables: [text, audience]
    defaults: {route: cheap, model: fast, max_tokens: 300, temperature: 0.2}
    messages:
      - role: system
        content: You summarise for {{ audience }}.
      - role: user
        content: |
          Summarise this:
          {{ text }}
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def one_prompt(content: str, *, variables: str = "", extra: str = "") -> str:
    """A file holding one prompt whose user message is `content` (a block scalar: line 6, +1 per option)."""
    body = textwrap.indent(textwrap.dedent(content), " " * 10)
    return f"prompts:\n  - name: p\n{variables}{extra}    messages:\n      - role: user\n        content: |\n{body}"


def load_one(tmp_path: Path, content: str, **kwargs: str) -> TemplateSet:
    write(tmp_path, "p.yaml", one_prompt(content, **kwargs))
    return load_templates(tmp_path)


def config_error(tmp_path: Path, content: str, **kwargs: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_one(tmp_path, content, **kwargs)
    return info.value


def render_error(prompts: TemplateSet, variables: dict[str, object]) -> PromptRenderError:
    with pytest.raises(PromptRenderError) as info:
        prompts.render("p", variables)
    return info.value


# --- loading and rendering -------------------------------------------------------------------


def test_renders_messages_and_defaults_from_yaml(tmp_path: Path) -> None:
    write(tmp_path, "summarise.yaml", SUMMARISE)
    prompt = load_templates(tmp_path).render("summarise", {"text": "Long <b>text</b>.", "audience": "engineers"})
    assert prompt.messages == [
        {"role": "system", "content": "You summarise for engineers."},
        {"role": "user", "content": "Summarise this:\nLong <b>text</b>.\n"},  # no HTML escaping
    ]
    assert (prompt.name, prompt.version) == ("summarise", "1")
    assert prompt.params() == {"route": "cheap", "model": "fast", "max_tokens": 300, "temperature": 0.2}


def test_highest_version_is_the_default_and_others_are_reachable(tmp_path: Path) -> None:
    versions = "\n".join(
        f"  - name: greet\n    version: {v}\n    messages:\n      - role: user\n        content: v{v} {{{{ who }}}}"
        for v in (9, 10, 2)
    )
    write(tmp_path, "greet.yaml", "prompts:\n" + versions + "\n")
    prompts = load_templates(tmp_path)
    assert prompts.versions("greet") == ["2", "9", "10"]  # natural order, numbers in YAML read as text
    assert prompts.render("greet", {"who": "ops"}).messages[0]["content"] == "v10 ops"
    assert prompts.render("greet", {"who": "ops"}, version="9").messages[0]["content"] == "v9 ops"
    with pytest.raises(PromptRenderError) as info:
        prompts.render("greet", {"who": "ops"}, version="3")
    assert info.value.field == "version" and "2, 9, 10" in str(info.value)
    with pytest.raises(InvalidRequest) as unknown:  # PromptRenderError is the router's InvalidRequest
        prompts.render("nope", {})
    assert "greet" in str(unknown.value)


def test_loops_over_data_without_blank_lines(tmp_path: Path) -> None:
    prompts = load_one(tmp_path, """\
        {% for d in docs %}
        [{{ loop.index }}] {{ d["title"] }}: {{ d["tags"] | join(", ") }}
        {% endfor %}
        {{ docs | tojson }}
        """)
    docs = [{"title": "A<", "tags": ["x", "y"]}, {"title": "B", "tags": []}]
    content = prompts.render("p", {"docs": docs}).messages[0]["content"]
    assert content == '[1] A<: x, y\n[2] B: \n[{"title": "A<", "tags": ["x", "y"]}, {"title": "B", "tags": []}]\n'


def test_the_shipped_example_prompts_load_and_render() -> None:
    prompts = load_templates(REPO / "policies" / "prompts")
    excerpts = [{"title": "Reset", "text": "Hold the button."}]
    rendered = prompts.render("support-answer", {"product": "Acme", "question": "How?", "excerpts": excerpts})
    assert rendered.version == "2" and rendered.response_format == {"type": "json_object"}
    assert "[1] Reset: Hold the button." in str(rendered.messages[1]["content"])
    agent = prompts.render("ops-agent", {"team": "SRE", "tools": ["get_weather"]})
    assert agent.messages[0]["role"] == "system" and "get_weather" in str(agent.messages[0]["content"])


# --- errors at load: file and line -----------------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    err = config_error(tmp_path, "line one\nline two {{ oops\n")
    issue = err.issues[0]
    assert issue.file.endswith("p.yaml") and issue.field == "prompts[0].messages[0].content"
    assert issue.line == 7  # the content starts on line 6; the error is on its second line


def test_declared_variables_must_match_the_template(tmp_path: Path) -> None:
    err = config_error(tmp_path, "{{ topic }} {{ tone }}\n", variables="    variables: [topic, length]\n")
    text = str(err)
    assert "used but not declared: tone" in text and "declared but not used: length" in text
    assert err.issues[0].field == "prompts[0].variables" and err.issues[0].line == 3


def test_schema_errors_name_the_field(tmp_path: Path) -> None:
    err = config_error(tmp_path, "hi\n", extra="    defaults: {temprature: 0.5}\n")
    assert err.issues[0].field == "prompts[0].defaults.temprature" and err.issues[0].line == 3


def test_a_name_and_version_defined_twice_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", SUMMARISE)
    write(tmp_path, "b.yaml", SUMMARISE)
    with pytest.raises(ConfigError) as info:
        load_templates(tmp_path)
    assert "b.yaml" in info.value.issues[0].file and "also defined in" in str(info.value)


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    write(tmp_path, "big.yaml", SUMMARISE + "#" + "x" * 2000 + "\n")
    with pytest.raises(ConfigError, match="larger than 1000 bytes"):
        load_templates(tmp_path, max_file_bytes=1000)


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_templates(tmp_path / "nope")


# --- errors at render ------------------------------------------------------------------------


def test_missing_variable_names_the_variable_and_line(tmp_path: Path) -> None:
    prompts = load_one(tmp_path, "Dear {{ name }},\nabout {{ topic }}\n")
    err = render_error(prompts, {"name": "Ann"})
    assert err.field == "variables.topic" and err.line == 7 and err.file is not None
    assert "'topic' is missing" in str(err) and "p.yaml:7" in str(err)


def test_missing_key_in_data_is_an_error_not_empty_text(tmp_path: Path) -> None:
    prompts = load_one(tmp_path, "{{ user['name'] }}\n")
    assert "key 'name' is missing" in str(render_error(prompts, {"user": {"nom": "x"}}))


def test_variables_must_be_data(tmp_path: Path) -> None:
    prompts = load_one(tmp_path, "{{ user }}\n")
    err = render_error(prompts, {"user": {"tags": [object()]}})
    assert err.field == "variables.user.tags[0]" and "not object" in str(err)


# --- the sandbox -----------------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    "{{ x.__class__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ x.upper() }}",
    "{{ x.a.b.c }}",
    "{{ x['__class__'] }}",
    "{{ x | attr('__class__') }}",
    "{{ x | center(1000000000) }}",
    "{% include '/etc/passwd' %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
])
def test_escapes_are_refused_at_load_with_a_line(tmp_path: Path, content: str) -> None:
    err = config_error(tmp_path, "first line\n" + content + "\n")
    assert err.issues[0].line == 7, str(err)
    assert "not allowed in prompts" in str(err) or "template error" in str(err)


def test_globals_of_plain_jinja_are_not_there(tmp_path: Path) -> None:
    prompts = load_one(tmp_path, "{{ lipsum(100000) }}\n")
    assert render_error(prompts, {}).field == "variables.lipsum"


@pytest.mark.parametrize(("content", "variables", "message"), [
    ("{{ x[k] }}", {"x": "text", "k": "__class__"}, "only data lookups"),
    ("{{ xs | map(attribute=k) | list }}", {"xs": ["a"], "k": "__class__"}, "only data lookups"),
    ("{{ range(10 ** 9) | length }}", {}, "range() is limited"),
    ("{{ 10 ** 100000 ** 10 }}", {}, "too large"),  # Jinja: (10 ** 100000) ** 10
    ("{{ 'ab' * 10 ** 9 }}", {}, "would build a value"),
    ("{{ x * 10 ** 9 }}", {"x": ["a"]}, "would build a value"),
    ("{{ '%0999999999d' % 1 }}", {}, "formatting is not allowed"),
    ("{{ x | indent(10 ** 9) }}", {"x": "a\nb"}, "indent width"),
])
def test_resource_abuse_and_dynamic_escapes_fail_at_render(
    tmp_path: Path, content: str, variables: dict[str, object], message: str
) -> None:
    prompts = load_one(tmp_path, content + "\n")
    err = render_error(prompts, variables)
    assert message in str(err) and err.field == "messages[0].content" and err.line == 6


def test_output_is_capped(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", one_prompt("{% for i in range(1000) %}{{ text }}{% endfor %}\n"))
    prompts = load_templates(tmp_path, max_output_chars=10_000)
    assert "exceeds 10000 characters" in str(render_error(prompts, {"text": "x" * 100}))
    assert len(str(prompts.render("p", {"text": "x"}).messages[0]["content"])) == 1000


# --- live reload -----------------------------------------------------------------------------


def test_an_edit_changes_the_next_render(tmp_path: Path) -> None:
    path = write(tmp_path, "summarise.yaml", SUMMARISE)
    source = TemplateSource(tmp_path)
    variables = {"text": "t", "audience": "engineers"}
    assert source.current.render("summarise", variables).messages[0]["content"] == "You summarise for engineers."
    path.write_text(SUMMARISE.replace("You summarise for", "Briefly, for"))
    assert source.changed_on_disk()
    assert source.reload() is True and source.last_error is None
    assert source.current.render("summarise", variables).messages[0]["content"] == "Briefly, for engineers."
    assert source.current.version == 1 and not source.changed_on_disk()


def test_a_broken_edit_is_rejected_and_the_old_set_keeps_serving(tmp_path: Path) -> None:
    path = write(tmp_path, "summarise.yaml", SUMMARISE)
    source = TemplateSource(tmp_path)
    variables = {"text": "t", "audience": "engineers"}
    path.write_text(SUMMARISE.replace("{{ text }}", "{{ text }} in {{ style }}"))  # undeclared variable
    assert source.reload() is False
    assert source.last_error is not None and "used but not declared: style" in str(source.last_error)
    assert source.last_error.file == str(path) and source.last_error.line == 4
    assert source.current.render("summarise", variables).messages[1]["content"] == "Summarise this:\nt\n"
    path.write_text(SUMMARISE.replace("{{ audience }}", "{{ audience "))  # syntax error on line 8
    assert source.reload() is False and source.last_error.line == 8
    assert source.current.version == 0
    path.write_text(SUMMARISE)
    assert source.reload() is True and source.last_error is None and source.current.version == 1


def test_invalid_files_at_start_raise(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", "prompts: [")
    with pytest.raises(ConfigError, match="invalid YAML"):
        TemplateSource(tmp_path)


async def test_watcher_reloads_when_a_file_is_added(tmp_path: Path) -> None:
    write(tmp_path, "summarise.yaml", SUMMARISE)
    source = TemplateSource(tmp_path)
    write(tmp_path, "extra.yaml", SUMMARISE.replace("name: summarise", "name: other"))
    await source._check()  # what the watcher runs every interval
    assert "other" in source.current
    await source.aclose()
