"""Client request bodies: bytes → a checked ``dict``, or a 400 naming the offending field.

Owns what the sidecar accepts from apps on the OpenAI endpoints. Hand-written checks of the fields
the sidecar relies on or that providers reject late (cheaper than a model validation on the hot
path); unknown fields pass through untouched. Pure: no IO.

Bad input handled here: invalid UTF-8, malformed JSON, nesting too deep (``RecursionError``),
huge integer literals (Python's digit limit), non-finite numbers, lone UTF-16 surrogates
(``"\\ud800"``: rejected, because they cannot be re-encoded for the provider), wrong types and
out-of-range values.

Both steps have a fast path for the usual request that gives the same result as the full one:
``parse_object`` takes ``orjson`` (several times cheaper than the standard library's decoder)
for a body without a run of 19 or more digits (orjson reads an integer beyond 64 bits as a
float), and the standard library for everything else and for every error message; ``chat``
accepts at a glance a body of plain fields (``_plain_chat``) and checks anything else field by
field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

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


#: Every digit as ``0``, so that one ``find`` tells whether a text has a run of 19 digits.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TEXT_DIGITS_AS_ZERO = str.maketrans("123456789", "000000000")
_LONG_DIGIT_BYTES = b"0" * 19
_LONG_DIGITS = "0" * 19


def long_digits(data: str | bytes) -> bool:
    """Whether ``data`` has a run of 19 or more digits: where orjson may read an integer
    (beyond 64 bits) otherwise than the standard library (as a float). Every orjson fast path
    (``parse_object``, ``translate.base.loads_json``, the OpenAI stream decoder) leaves such a
    text to the standard library."""
    if isinstance(data, bytes):
        return data.translate(_DIGITS_AS_ZERO).find(_LONG_DIGIT_BYTES) >= 0
    return data.translate(_TEXT_DIGITS_AS_ZERO).find(_LONG_DIGITS) >= 0


def parse_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; ``InvalidJSON`` (400) otherwise."""
    if not long_digits(body):
        # orjson reads what the standard library reads (RFC 8259 JSON, UTF-8, last duplicate
        # key wins) to the same values once no integer can exceed 64 bits, and refuses what
        # our decoder refuses (non-finite numbers, invalid UTF-8, lone surrogates); anything it
        # refuses takes the decoder below, which words the error.
        try:
            fast = orjson.loads(body)
        except orjson.JSONDecodeError:
            fast = None
        if type(fast) is dict:
            if _SURROGATE_ESCAPE.search(body):
                _reject_lone_surrogates(fast, "")
            return fast
    return _parse_checked(body)


def _parse_checked(body: bytes) -> dict[str, Any]:
    """``parse_object`` by the standard library's decoder alone."""
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


def _a(v: Any) -> str:
    kind = _kind(v)
    return f"an {kind}" if kind[0] in "ao" else f"a {kind}"


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


#: The largest ``max_tokens`` / ``max_completion_tokens`` accepted (no model comes near it; a
#: bigger number is a mistake, and one of hundreds of digits would overflow the cost arithmetic).
MAX_TOKENS_FIELD = 2**31 - 1
#: OpenAI's own bound for ``n``.
MAX_N = 128


def _want_int(body: dict[str, Any], name: str, minimum: int, maximum: int) -> None:
    """An integer in range; an integral number (``1.0``, valid JSON for an integer) is taken
    and stored as an ``int``."""
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, float) and v.is_integer():
        v = body[name] = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidField(name, f"expected an integer, got {_a(v)}")
    if v < minimum:
        raise InvalidField(name, f"must be at least {minimum}, got {_short(v)}")
    if v > maximum:
        raise InvalidField(name, f"must be at most {maximum}, got {_short(v)}")


def _short(v: int) -> str:
    """An integer for a message: at most 20 digits of it (and never Python's digit limit)."""
    if v.bit_length() < 64:
        return str(v)
    return f"an integer of about {int(v.bit_length() * 0.30103) + 1} digits"


# --- nested shapes: each raises ``InvalidField`` naming the path ------------------------------


def want_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidField(path, f"expected an object, got {_a(value)}")
    return value


def want_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidField(path, f"expected an array, got {_a(value)}")
    return value


def want_str(obj: dict[str, Any], name: str, path: str, *, required: bool = False) -> None:
    v = obj.get(name)
    if v is None and not required:
        return
    if not isinstance(v, str):
        got = "nothing" if v is None else _a(v)
        raise InvalidField(_at(path, name), f"expected a string, got {got}")


def want_field_object(obj: dict[str, Any], name: str, path: str) -> None:
    v = obj.get(name)
    if v is not None:
        want_object(v, _at(path, name))


def _at(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _tools(tools: Any) -> None:
    for i, t in enumerate(want_list(tools, "tools")):
        p = f"tools[{i}]"
        want_str(want_object(t, p), "type", p)
        if t.get("type") in (None, "function") or "function" in t:
            fn = want_object(t.get("function"), f"{p}.function")
            want_str(fn, "name", f"{p}.function", required=True)
            want_str(fn, "description", f"{p}.function")
            want_field_object(fn, "parameters", f"{p}.function")


def _tool_choice(choice: Any) -> None:
    if choice is None or isinstance(choice, str):
        return
    want_str(want_object(choice, "tool_choice"), "type", "tool_choice")
    if "function" in choice:
        want_str(
            want_object(choice["function"], "tool_choice.function"),
            "name",
            "tool_choice.function",
            required=True,
        )


def _tool_calls(calls: Any, path: str) -> None:
    for k, c in enumerate(want_list(calls, path)):
        p = f"{path}[{k}]"
        want_object(c, p)
        want_str(c, "id", p)
        want_str(c, "type", p)
        fn = want_object(c.get("function"), f"{p}.function")
        want_str(fn, "name", f"{p}.function", required=True)
        want_str(fn, "arguments", f"{p}.function")


def _parts(content: list[Any], path: str) -> None:
    for k, part in enumerate(content):
        p = f"{path}[{k}]"
        want_str(want_object(part, p), "type", p, required=True)
        kind = part["type"]
        if kind == "text":
            want_str(part, "text", p, required=True)
        elif kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, str):
                want_str(
                    want_object(image, f"{p}.image_url"), "url", f"{p}.image_url", required=True
                )
        elif kind in ("input_audio", "file"):
            want_object(part.get(kind), f"{p}.{kind}")


def _message(i: int, m: Any) -> None:
    p = f"messages[{i}]"
    if not isinstance(m, dict):
        raise InvalidField(p, f"expected an object, got {_a(m)}")
    role = m.get("role")
    if not isinstance(role, str):
        raise InvalidField(f"{p}.role", f"expected a string, got {_a(role)}")
    content = m.get("content")
    if isinstance(content, list):
        _parts(content, f"{p}.content")
    elif content is not None and not isinstance(content, str):
        raise InvalidField(f"{p}.content", f"expected a string or an array, got {_a(content)}")
    if m.get("tool_calls") is not None:
        _tool_calls(m["tool_calls"], f"{p}.tool_calls")
    want_str(m, "tool_call_id", p)
    want_str(m, "name", p)


def _want_number(body: dict[str, Any], name: str) -> None:
    v = body.get(name)
    if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
        raise InvalidField(name, f"expected a number, got {_a(v)}")


def _want_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidField("model", "this field is required")
    if not isinstance(model, str):
        raise InvalidField("model", f"expected a non-empty string, got {_a(model)}")
    if not model:
        raise InvalidField("model", "expected a non-empty string, got an empty string")
    return model


#: The fields ``chat`` checks that ``_plain_chat`` leaves to the full checks, and the types it
#: accepts at a glance for the others (besides ``model`` and ``messages``).
_NOT_PLAIN = frozenset(
    ("n", "tools", "tool_choice", "response_format", "logit_bias", "user", "stop")
)
_PLAIN_TYPES: dict[str, tuple[type, ...]] = {
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "stream": (bool,),
    "stream_options": (dict,),
    "metadata": (dict,),
    "temperature": (int, float),
    "top_p": (int, float),
}
_PLAIN_TYPED = frozenset(_PLAIN_TYPES)


def _plain_chat(body: dict[str, Any]) -> bool:
    """True for the usual chat body, which ``chat`` accepts as it is: a non-empty model name,
    messages that each are a role and a string content (nothing else), and of the other fields
    ``chat`` checks only plain ones (a token cap as an ``int`` in range, ``stream`` a boolean,
    ``metadata`` / ``stream_options`` objects, ``temperature`` / ``top_p`` numbers). False
    means only "not at a glance": ``chat`` then checks field by field."""
    model = body.get("model")
    messages = body.get("messages")
    if (
        type(model) is not str
        or not model
        or type(messages) is not list
        or not messages
        or not _NOT_PLAIN.isdisjoint(body)
    ):
        return False
    for m in messages:
        if (
            type(m) is not dict
            or len(m) != 2
            or type(m.get("role")) is not str
            or type(m.get("content")) is not str
        ):
            return False
    for name in _PLAIN_TYPED.intersection(body):
        v = body[name]
        if type(v) not in _PLAIN_TYPES[name]:  # exact types: no bool for an int, no None
            return False
        if type(v) is int and name.startswith("max_") and not 1 <= v <= MAX_TOKENS_FIELD:
            return False
    return True


def chat(body: dict[str, Any]) -> str:
    """Check a chat completions body; return its model name."""
    if _plain_chat(body):
        model: str = body["model"]
        return model
    return _chat_checked(body)


def _chat_checked(body: dict[str, Any]) -> str:
    """``chat`` field by field."""
    model = _want_model(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidField("messages", "this field is required")
    if not isinstance(messages, list):
        raise InvalidField("messages", f"expected an array of messages, got {_a(messages)}")
    if not messages and not _names_prompt(body):
        raise InvalidField(
            "messages",
            "must contain at least one message (an empty list is allowed only when "
            "metadata.prompt or the x-sluice-prompt header names a template that supplies them)",
        )
    for i, m in enumerate(messages):
        _message(i, m)
    _want_stream(body)
    _want_int(body, "max_tokens", 1, MAX_TOKENS_FIELD)
    _want_int(body, "max_completion_tokens", 1, MAX_TOKENS_FIELD)
    _want_int(body, "n", 1, MAX_N)
    if body.get("tools") is not None:
        _tools(body["tools"])
    _tool_choice(body.get("tool_choice"))
    for name in ("metadata", "response_format", "logit_bias"):
        if body.get(name) is not None:
            want_object(body[name], name)
    if isinstance(body.get("response_format"), dict):
        want_str(body["response_format"], "type", "response_format", required=True)
    want_str(body, "user", "")
    _want_number(body, "temperature")
    _want_number(body, "top_p")
    _want_stop(body)
    return model


def _names_prompt(body: dict[str, Any]) -> bool:
    """The body names a PromptTemplate (whose messages then make the list non-empty)."""
    meta = body.get("metadata")
    return isinstance(meta, dict) and isinstance(meta.get("prompt"), str) and bool(meta["prompt"])


def completions(body: dict[str, Any]) -> str:
    """Check a text completions body (``POST /v1/completions``); return its model name."""
    model = _want_model(body)
    _want_texts_or_tokens(body, "prompt")
    want_str(body, "suffix", "")
    _want_stream(body)
    _want_int(body, "max_tokens", 1, MAX_TOKENS_FIELD)
    _want_int(body, "n", 1, MAX_N)
    _want_int(body, "best_of", 1, MAX_N)
    _want_int(body, "logprobs", 0, 20)
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise InvalidField("echo", f"expected a boolean, got {_a(echo)}")
    if body.get("logit_bias") is not None:
        want_object(body["logit_bias"], "logit_bias")
    want_str(body, "user", "")
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _want_number(body, name)
    _want_stop(body)
    return model


def embeddings(body: dict[str, Any]) -> str:
    """Check an embeddings body; return its model name."""
    model = _want_model(body)
    _want_texts_or_tokens(body, "input")
    return model


def _want_texts_or_tokens(body: dict[str, Any], name: str) -> None:
    """A required string, or a non-empty array of strings, token ids or arrays of token ids."""
    data = body.get(name)
    if data is None:
        raise InvalidField(name, "this field is required")
    if isinstance(data, str):
        return
    if not isinstance(data, list) or not data:
        raise InvalidField(name, "expected a string or a non-empty array")
    for i, item in enumerate(data):
        if isinstance(item, str) or (isinstance(item, int) and not isinstance(item, bool)):
            continue
        if isinstance(item, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            continue
        raise InvalidField(f"{name}[{i}]", "expected a string, a token id or an array of token ids")


def _want_stream(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidField("stream", f"expected a boolean, got {_a(stream)}")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise InvalidField("stream_options", f"expected an object, got {_a(so)}")


def _want_stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise InvalidField("stop", "expected a string or an array of strings")


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters of prompt text (for token estimates when the provider reports no usage)."""
    total = 0
    for name in ("prompt", "suffix"):  # text completions
        value = body.get(name)
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(x) if isinstance(x, str) else 4 for x in value)
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
