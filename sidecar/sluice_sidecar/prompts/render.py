"""PromptTemplate rendering: which version serves a request, and the messages it becomes.

Owns: reading the prompt reference (``metadata.prompt`` = ``name``, ``name@label`` or
``name@<version>``, or the header ``x-sluice-prompt``) and its variables (``metadata.variables``,
or the header ``x-sluice-prompt-variables``: a JSON object of at most ``MAX_VARIABLES_HEADER``
bytes; ``from_headers`` folds both headers into the body, the body's own keys winning);
choosing the version (a label, with ``split`` sending a share of ``production`` traffic to another
label's version); filling ``{{variable}}`` placeholders (required, default, maxLength checked;
values are inserted literally, never re-expanded); and the request body that results: the
template's messages first, then the request's own, the version's ``params`` as defaults for fields
the request does not set, and Sluice's own keys removed from ``metadata``.

Purely computational: the caller passes the random draw used for the split.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..contract import Prompt, PromptVersion
from ..errors import InvalidField

HEADER = "x-sluice-prompt"
VARIABLES_HEADER = "x-sluice-prompt-variables"
#: Longest accepted ``x-sluice-prompt-variables`` value, in bytes (below aiohttp's 8 KiB header
#: line limit; larger values belong in the body's ``metadata.variables``).
MAX_VARIABLES_HEADER = 4096
PRODUCTION = "production"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_OURS = ("prompt", "variables")


@dataclass(frozen=True, slots=True)
class Rendered:
    body: dict[str, Any]
    name: str
    version: int
    label: str | None


def reference(body: Mapping[str, Any], header: str | None) -> tuple[str, dict[str, Any]] | None:
    """(prompt reference, variables) of a request, or None when it names no prompt."""
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    ref = meta.get("prompt", header)
    if ref is None:
        return None
    if not isinstance(ref, str) or not ref:
        raise InvalidField(
            "metadata.prompt", "expected a string such as 'support-answer@production'"
        )
    variables = meta.get("variables", {})
    if not isinstance(variables, Mapping):
        raise InvalidField("metadata.variables", "expected an object of variable values")
    return ref, dict(variables)


def from_headers(body: dict[str, Any], headers: Mapping[str, str]) -> None:
    """Fold ``x-sluice-prompt`` and ``x-sluice-prompt-variables`` into ``body["metadata"]``
    (in place) unless the body names a prompt itself; raises ``InvalidField`` for a variables
    header that is oversized or not a JSON object of values."""
    ref = headers.get(HEADER)
    if ref is None:
        return
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        return  # the body's own check reports it
    if meta is not None and "prompt" in meta:
        return
    merged: dict[str, Any] = dict(meta or {})
    merged["prompt"] = ref.strip()
    raw = headers.get(VARIABLES_HEADER)
    if raw is not None and "variables" not in merged:
        if len(raw.encode()) > MAX_VARIABLES_HEADER:
            raise InvalidField(
                VARIABLES_HEADER,
                f"longer than {MAX_VARIABLES_HEADER} bytes; send large values in "
                "metadata.variables instead",
            )
        try:
            variables = json.loads(raw)
        except ValueError:
            variables = None
        if not isinstance(variables, dict):
            raise InvalidField(
                VARIABLES_HEADER, 'expected a JSON object such as {"question": "..."}'
            )
        merged["variables"] = variables
    body["metadata"] = merged


def choose(prompt: Prompt, selector: str | None, draw: float) -> tuple[PromptVersion, str | None]:
    """The version for ``selector`` (a label, a version number, or None for production).

    ``draw`` in [0, 1) decides the split: with ``split: {canary: 10}``, production requests whose
    draw is below 0.10 get the canary's version.
    """
    by_number = {v.version: v for v in prompt.versions}
    if selector is not None and selector.isdigit():
        version = by_number.get(int(selector))
        if version is None:
            raise InvalidField(
                "metadata.prompt", f"prompt {prompt.name!r} has no version {selector}"
            )
        return version, None
    label = selector or PRODUCTION
    if label == PRODUCTION:
        threshold = 0.0
        for other, percent in sorted(prompt.split.items()):
            threshold += percent / 100
            if draw < threshold and other in prompt.labels:
                label = other
                break
    number = prompt.labels.get(label)
    if number is None or number not in by_number:
        known = ", ".join(sorted(prompt.labels)) or "none"
        raise InvalidField(
            "metadata.prompt", f"prompt {prompt.name!r} has no label {label!r} (labels: {known})"
        )
    return by_number[number], label


def fill(version: PromptVersion, variables: Mapping[str, Any]) -> list[dict[str, str]]:
    """The version's messages with placeholders filled; raises on a missing or too long value."""
    values: dict[str, str] = {}
    for name, spec in version.variables.items():
        raw = variables.get(name, spec.default)
        if raw is None:
            if spec.required:
                raise InvalidField(f"metadata.variables.{name}", "this variable is required")
            continue
        text = raw if isinstance(raw, str) else str(raw)
        if spec.max_length is not None and len(text) > spec.max_length:
            raise InvalidField(
                f"metadata.variables.{name}",
                f"longer than maxLength {spec.max_length} ({len(text)} characters)",
            )
        values[name] = text
    for name, raw in variables.items():
        if name not in values and name not in version.variables:
            values[name] = raw if isinstance(raw, str) else str(raw)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise InvalidField(
                f"metadata.variables.{name}", "the template uses this variable; supply it"
            )
        return values[name]

    return [
        {"role": m.role, "content": _PLACEHOLDER.sub(substitute, m.content)}
        for m in version.messages
    ]


def render(
    body: Mapping[str, Any],
    prompts: Mapping[str, Prompt],
    ref: str,
    variables: Mapping[str, Any],
    draw: float,
) -> Rendered:
    """The request body with the referenced prompt applied."""
    name, _, selector = ref.partition("@")
    prompt = prompts.get(name)
    if prompt is None:
        known = ", ".join(sorted(prompts)) or "none"
        raise InvalidField("metadata.prompt", f"unknown prompt {name!r} (known: {known})")
    version, label = choose(prompt, selector or None, draw)
    out = dict(body)
    own = out.get("messages")
    out["messages"] = fill(version, variables) + (list(own) if isinstance(own, list) else [])
    for key, value in version.params.items():
        out.setdefault(key, value)
    meta = {k: v for k, v in (out.get("metadata") or {}).items() if k not in _OURS}
    if meta:
        out["metadata"] = meta
    else:
        out.pop("metadata", None)
    return Rendered(out, name, version.version, label)
