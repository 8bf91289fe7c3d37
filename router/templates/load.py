"""Loading a prompt directory: parse each YAML file, check and compile its templates, report every problem."""

from __future__ import annotations

from pathlib import Path

import yaml
from jinja2 import TemplateSyntaxError, meta

from router.errors import ConfigError, ConfigIssue
from router.policy.loader import format_loc, load_model, nearest_line
from router.templates.render import CompiledMessage, CompiledPrompt, TemplateSet
from router.templates.sandbox import MAX_OUTPUT_CHARS, PromptSandbox, forbidden
from router.templates.schema import PromptsFile

#: Largest prompt file read (bytes); a bigger one is refused before parsing.
MAX_FILE_BYTES = 256 * 1024


def _content_lines(path: Path) -> dict[tuple[str | int, ...], int]:
    """File line where each message's content text starts (block scalars start on the next line)."""
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    out: dict[tuple[str | int, ...], int] = {}
    prompts = next((v for k, v in getattr(root, "value", []) if k.value == "prompts"), None)
    for i, prompt in enumerate(getattr(prompts, "value", [])):
        msgs = next((v for k, v in getattr(prompt, "value", []) if k.value == "messages"), None)
        for j, msg in enumerate(getattr(msgs, "value", [])):
            for key, value in getattr(msg, "value", []):
                if key.value == "content" and isinstance(value, yaml.ScalarNode):
                    out[("prompts", i, "messages", j)] = value.start_mark.line + 1 + (value.style in ("|", ">"))
    return out


def _file_line(first: int | None, template_line: int | None) -> int | None:
    return first + template_line - 1 if first and template_line else first


def _compile_file(path: Path, env: PromptSandbox, issues: list[ConfigIssue]) -> list[CompiledPrompt]:
    parsed, lines = load_model(path, PromptsFile)
    starts = _content_lines(path)
    compiled: list[CompiledPrompt] = []
    for i, spec in enumerate(parsed.prompts):
        used: set[str] = set()
        messages: list[CompiledMessage] = []
        before = len(issues)
        for j, msg in enumerate(spec.messages):
            loc = ("prompts", i, "messages", j, "content")
            first = starts.get(loc[:-1]) or nearest_line(lines, loc)
            filename = f"{path}#{spec.name}@{spec.version}/messages[{j}]"
            try:
                tree = env.parse(msg.content, filename=filename)
                bad = forbidden(tree)
                issues += [ConfigIssue(str(path), format_loc(loc), f"not allowed in prompts: {what}",
                                       _file_line(first, n)) for what, n in bad]
                if bad:
                    continue
                used |= meta.find_undeclared_variables(tree) - set(env.globals)
                code = env.compile(msg.content, name=filename, filename=filename)
                template = env.template_class.from_code(env, code, env.make_globals(None))
            except TemplateSyntaxError as exc:
                issues.append(ConfigIssue(str(path), format_loc(loc), f"template error: {exc.message}",
                                          _file_line(first, exc.lineno)))
                continue
            messages.append(CompiledMessage(msg.role, msg.name, template, filename, first))
        if spec.variables is not None and len(issues) == before:
            undeclared, unused = used - set(spec.variables), set(spec.variables) - used
            where = ("prompts", i, "variables")
            if undeclared:
                issues.append(ConfigIssue(str(path), format_loc(where), "used but not declared: "
                                          + ", ".join(sorted(undeclared)), nearest_line(lines, where)))
            if unused:
                issues.append(ConfigIssue(str(path), format_loc(where), "declared but not used: "
                                          + ", ".join(sorted(unused)), nearest_line(lines, where)))
        if len(issues) == before:
            compiled.append(CompiledPrompt(spec, str(path), tuple(messages)))
    return compiled


def prompt_files(directory: Path) -> list[Path]:
    """The prompt files in `directory` (`*.yaml`, `*.yml`), in name order."""
    return sorted(p for p in directory.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_templates(directory: Path, *, max_file_bytes: int = MAX_FILE_BYTES,
                   max_output_chars: int = MAX_OUTPUT_CHARS, version: int = 0) -> TemplateSet:
    """Load and validate every prompt file in `directory` (sync: file I/O; run it in a thread).

    Raises `ConfigError` listing every problem, each with file, field path and
    line: YAML or schema errors, template syntax errors, forbidden constructs,
    `variables:` that do not match the messages, a name+version defined twice,
    a file over `max_file_bytes`, a missing directory.
    """
    if not directory.is_dir():
        raise ConfigError([ConfigIssue(str(directory), "", "prompt directory not found")])
    env = PromptSandbox(max_output_chars)
    issues: list[ConfigIssue] = []
    prompts: dict[str, dict[str, CompiledPrompt]] = {}
    for path in prompt_files(directory):
        if path.stat().st_size > max_file_bytes:
            issues.append(ConfigIssue(str(path), "", f"file larger than {max_file_bytes} bytes"))
            continue
        try:
            loaded = _compile_file(path, env, issues)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        for prompt in loaded:
            earlier = prompts.setdefault(prompt.spec.name, {}).get(prompt.spec.version)
            if earlier is not None:
                issues.append(ConfigIssue(prompt.file, "prompts", f"prompt {prompt.spec.name!r} version "
                                          f"{prompt.spec.version!r} is also defined in {earlier.file}"))
            prompts[prompt.spec.name][prompt.spec.version] = prompt
    if issues:
        raise ConfigError(issues)
    return TemplateSet(prompts, version=version, sandbox=env)
