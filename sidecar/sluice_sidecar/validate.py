"""Client request bodies: bytes → a checked ``dict``, or a 400 naming the offending field.

Owns what the sidecar accepts from apps on the OpenAI endpoints. Hand-written checks of the fields
the sidecar relies on or that providers reject late (cheaper than a model validation on the hot
path); unknown fields pass through untouched. Pure: no IO.

Bad input handled here: invalid UTF-8, malformed JSON, nesting too deep (``RecursionError``),
huge integer literals (Python's digit limit), non-finite numbers, lone UTF-16 surrogates
(``"\\ud800"``: rejected, because they cannot be re-encoded for the provider), wrong types and
out-of-range values.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import InvalidField, InvalidJSON

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not valid JSON")


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def parse_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; ``InvalidJSON`` (400) otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"The request body is not valid UTF-8 (at byte {exc.start}).") from None
    try:
        obj = _DECODER.decode(text)
    except RecursionError:
        raise InvalidJSON("The request body's JSON is nested too deeply.") from None
    except ValueError as exc:
        raise InvalidJSON(
            f"We could not parse the JSON body of your request: {str(exc)[:200]}. "
            "Send a JSON object with Content-Type: application/json."
        ) from None
    if not isinstance(obj, dict):
        raise InvalidJSON(f"The request body must be a JSON object, not a JSON {_kind(obj)}.")
    if _SURROGATE_ESCAPE.search(body):
        _reject_lone_surrogates(obj, "")
    return obj


def _reject_lone_surrogates(value: Any, path: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidField(
                path or "<root>", "contains a lone UTF-16 surrogate (e.g. \\ud800)"
            ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _reject_lone_surrogates(k, path)
            _reject_lone_surrogates(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_lone_surrogates(v, f"{path}[{i}]")


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _want_int(body: dict[str, Any], name: str, minimum: int) -> None:
    v = body.get(name)
    if v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidField(name, f"expected an integer, got a {_kind(v)}")
    if v < minimum:
        raise InvalidField(name, f"must be at least {minimum}, got {v}")


def _want_number(body: dict[str, Any], name: str) -> None:
    v = body.get(name)
    if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
        raise InvalidField(name, f"expected a number, got a {_kind(v)}")


def _want_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidField("model", "this field is required")
    if not isinstance(model, str) or not model:
        raise InvalidField("model", f"expected a non-empty string, got a {_kind(model)}")
    return model


def chat(body: dict[str, Any]) -> str:
    """Check a chat completions body; return its model name."""
    model = _want_model(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidField("messages", "this field is required")
    if not isinstance(messages, list):
        raise InvalidField("messages", f"expected an array of messages, got a {_kind(messages)}")
    if not messages and not _names_prompt(body):
        raise InvalidField(
            "messages",
            "must contain at least one message (an empty list is allowed only when "
            "metadata.prompt or the x-sluice-prompt header names a template that supplies them)",
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidField(f"messages[{i}]", f"expected an object, got a {_kind(m)}")
        role = m.get("role")
        if not isinstance(role, str):
            raise InvalidField(f"messages[{i}].role", f"expected a string, got a {_kind(role)}")
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidField(
                f"messages[{i}].content", f"expected a string or an array, got a {_kind(content)}"
            )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidField("stream", f"expected a boolean, got a {_kind(stream)}")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise InvalidField("stream_options", f"expected an object, got a {_kind(so)}")
    _want_int(body, "max_tokens", 1)
    _want_int(body, "max_completion_tokens", 1)
    _want_int(body, "n", 1)
    _want_number(body, "temperature")
    _want_number(body, "top_p")
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise InvalidField("stop", "expected a string or an array of strings")
    return model


def _names_prompt(body: dict[str, Any]) -> bool:
    """The body names a PromptTemplate (whose messages then make the list non-empty)."""
    meta = body.get("metadata")
    return isinstance(meta, dict) and isinstance(meta.get("prompt"), str) and bool(meta["prompt"])


def embeddings(body: dict[str, Any]) -> str:
    """Check an embeddings body; return its model name."""
    model = _want_model(body)
    data = body.get("input")
    if data is None:
        raise InvalidField("input", "this field is required")
    if isinstance(data, str):
        return model
    if not isinstance(data, list) or not data:
        raise InvalidField("input", "expected a string or a non-empty array")
    for i, item in enumerate(data):
        if isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool)):
            continue
        if isinstance(item, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            continue
        raise InvalidField(f"input[{i}]", "expected a string, a token id or an array of token ids")
    return model


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of prompt text (for token estimates when the provider reports no usage)."""
    total = 0
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"])
    inp = body.get("input")
    if isinstance(inp, str):
        total += len(inp)
    elif isinstance(inp, list):
        total += sum(len(x) if isinstance(x, str) else 4 for x in inp)
    return total


_ANSWER_TEXT = frozenset({"content", "text", "arguments", "refusal", "reasoning_content"})


def answer_chars(body: bytes) -> int:
    """Characters of generated text in a whole answer (any dialect's JSON: the strings under
    ``content``, ``text``, ``arguments``, …), for a token estimate when the provider's usage is
    missing or out of range; the body's length when it is not JSON."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return len(body)
    total = 0
    stack: list[Any] = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, str):
                    total += len(v) if k in _ANSWER_TEXT else 0
                elif isinstance(v, dict | list):
                    stack.append(v)
        elif isinstance(value, list):
            stack.extend(v for v in value if isinstance(v, dict | list))
    return total


def estimate_tokens(chars: int) -> int:
    """Rough token count from characters (≈4 per token), at least 1 for non-empty text."""
    return (chars + 3) // 4
