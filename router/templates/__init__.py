"""Prompt templates that ops edit in YAML, rendered in a Jinja2 sandbox, reloaded live.

A file in `policies/prompts/` holds a list of named, versioned prompts; each is
a list of chat messages whose `content` is a Jinja2 template:

```yaml
prompts:
  - name: summarise
    version: "2"
    variables: [text, audience]          # optional; when given it must match what the messages use
    defaults: {route: default, max_tokens: 300, temperature: 0.2}
    messages:
      - role: system
        content: You summarise text for {{ audience }}.
      - role: user
        content: |
          Summarise:
          {{ text }}
```

Templates are data, not code. They render in `ImmutableSandboxedEnvironment`
with `StrictUndefined`, no autoescaping, no loader (no include/import/extends),
no macros, no globals but a capped `range`, and an allow-list of filters.
Attribute access is refused: `x.y`, `x.__class__`, `cycler.__init__` are
rejected at load with file and line (look data up as `x["y"]`); only the
for-loop's counters (`loop.index`, `loop.first`, ...) may be read. At render,
variables must be JSON-like data (str, numbers, bools, None, lists, str-keyed
mappings); a dynamic `x[k]` on anything but a mapping or a sequence with an
int, `range` over 1000 items, `**`, `*` and `+` that would build huge values,
`%` on strings and output over `max_output_chars` raise `PromptRenderError`.
What this does not bound: a template author who chains `{% set %}` with `~` to
double a string forty times. Templates are ops-written; variables, which come
from callers, can never do that.

The package, one job per module: `schema` (the YAML models), `sandbox` (the
Jinja2 environment and the forbidden-construct check), `render` (`TemplateSet`,
`RenderedPrompt`, `PromptRenderError`), `load` (`load_templates`) and `source`
(`TemplateSource`, live reload). Import from `router.templates`.

>>> prompts = load_templates(Path("policies/prompts"))  # doctest: +SKIP
>>> p = prompts.render("summarise", {"text": "...", "audience": "engineers"})  # doctest: +SKIP
>>> await router.chat(p.messages, **p.params())  # doctest: +SKIP
"""

from router.templates.load import MAX_FILE_BYTES, load_templates, prompt_files
from router.templates.render import CompiledPrompt, PromptRenderError, RenderedPrompt, TemplateSet
from router.templates.sandbox import MAX_OUTPUT_CHARS
from router.templates.schema import PromptDefaults, PromptMessage, PromptRole, PromptsFile, PromptTemplate
from router.templates.source import TemplateSource

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_OUTPUT_CHARS",
    "CompiledPrompt",
    "PromptDefaults",
    "PromptMessage",
    "PromptRenderError",
    "PromptRole",
    "PromptTemplate",
    "PromptsFile",
    "RenderedPrompt",
    "TemplateSet",
    "TemplateSource",
    "load_templates",
    "prompt_files",
]
