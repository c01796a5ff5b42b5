"""The ``anthropic_openai`` translator's client half: ``POST /v1/messages``, the Anthropic API
served by the sidecar for apps using the anthropic SDK, over any backend that takes the canonical
(OpenAI chat) body. Pure: no IO.

Owns the Anthropic client API (``API``: ``translate.base.ClientAPI``): checking an Anthropic
Messages request and translating it into the canonical OpenAI chat body that routing, hooks and
every provider work on; and translating the answer back — a ``chat.completion`` into a
``message``, ``chat.completion.chunk`` frames into Anthropic's event stream (``message_start``,
``content_block_start``/``delta``/``stop``, ``message_delta`` with the usage, ``message_stop``),
errors into ``{"type": "error", "error": {…}}`` bodies and ``event: error`` frames.

When the chosen backend is Anthropic and no stage replaced the body, the client's own request is
passed through untouched (``anthropic_anthropic``: cache_control, thinking, documents, server
tools all survive) and the answer needs no translation. Otherwise the request goes through the
canonical form: ``output_config.format`` (structured outputs) becomes ``response_format``,
``output_config.effort`` ``reasoning_effort``; top-level fields OpenAI has no name for (``top_k``,
``thinking``, …) are carried under their own names for the backend's dialect to translate, pass
or refuse with a 400; ``thinking`` blocks in earlier turns, ``cache_control`` and ``is_error``
on tool results are dropped; blocks and tools of other types are carried as they are (an
Anthropic backend understands them, others refuse them). Errors keep Anthropic's types and
statuses: an overloaded provider is a 529 ``overloaded_error``.

The pairs ``anthropic_gemini`` and ``anthropic_anthropic`` over a rewritten body are this client
half composed with the backend halves of ``openai_gemini`` and ``openai_anthropic``
(``translate.pick``).
"""

from __future__ import annotations

import json
from typing import Any

from .. import sse, validate
from ..errors import InvalidField, SluiceError
from ..model import Operation
from .chat import CanonicalReshaper

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# --- request ----------------------------------------------------------------------------------


def check(body: dict[str, Any]) -> str:
    """Check an Anthropic Messages body (the fields the sidecar relies on); return its model."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidField("model", "expected a non-empty string")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        max_tokens = body["max_tokens"] = int(max_tokens)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidField("max_tokens", "required: an integer of at least 1")
    if max_tokens > validate.MAX_TOKENS_FIELD:
        raise InvalidField("max_tokens", f"must be at most {validate.MAX_TOKENS_FIELD}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidField("messages", "expected a non-empty array of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidField(f"messages[{i}]", "expected an object")
        if m.get("role") not in ("user", "assistant"):
            raise InvalidField(f"messages[{i}].role", "expected 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, list):
            _blocks(content, f"messages[{i}].content")
        elif not isinstance(content, str):
            raise InvalidField(f"messages[{i}].content", "expected a string or an array of blocks")
    system = body.get("system")
    if isinstance(system, list):
        _blocks(system, "system")
    elif system is not None and not isinstance(system, str):
        raise InvalidField("system", "expected a string or an array of text blocks")
    _check_tools_and_metadata(body)
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise InvalidField("stream", "expected a boolean")
    for name in ("temperature", "top_p"):
        v = body.get(name)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
            raise InvalidField(name, "expected a number")
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise InvalidField("stop_sequences", "expected an array of strings")
    return model


def _blocks(blocks: list[Any], path: str) -> None:
    """Content blocks: each an object with a ``type`` and the fields of that type."""
    for k, block in enumerate(blocks):
        p = f"{path}[{k}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidField(p, "expected a block with a 'type'")
        kind = block["type"]
        if kind == "text":
            validate.want_str(block, "text", p, required=True)
        elif kind == "tool_use":
            validate.want_str(block, "id", p)
            validate.want_str(block, "name", p, required=True)
            validate.want_field_object(block, "input", p)
        elif kind == "tool_result":
            validate.want_str(block, "tool_use_id", p, required=True)
            content = block.get("content")
            if isinstance(content, list):
                _blocks(content, f"{p}.content")
            elif content is not None and not isinstance(content, str):
                raise InvalidField(f"{p}.content", "expected a string or an array of blocks")
        elif kind in ("image", "document"):
            validate.want_object(block.get("source"), f"{p}.source")


def _check_tools_and_metadata(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        for i, t in enumerate(validate.want_list(tools, "tools")):
            if not isinstance(t, dict):
                raise InvalidField("tools", "expected an array of tool objects")
            validate.want_str(t, "type", f"tools[{i}]")
            if t.get("type") in (None, "custom"):
                validate.want_str(t, "name", f"tools[{i}]", required=True)
                validate.want_str(t, "description", f"tools[{i}]")
                validate.want_field_object(t, "input_schema", f"tools[{i}]")
    choice = body.get("tool_choice")
    if choice is not None:
        validate.want_str(
            validate.want_object(choice, "tool_choice"), "type", "tool_choice", required=True
        )
        if choice["type"] == "tool":
            validate.want_str(choice, "name", "tool_choice", required=True)
    if body.get("metadata") is not None:
        meta = validate.want_object(body["metadata"], "metadata")
        validate.want_str(meta, "user_id", "metadata")


def to_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The canonical OpenAI chat body for a checked Anthropic Messages body. A pure function."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        messages.append({"role": "system", "content": [_part(b) for b in system]})
    for m in body["messages"]:
        role, content = m["role"], m["content"]
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
        elif role == "user":
            parts = []
            for block in content:
                if block["type"] == "tool_result":
                    messages.append(
                        {
                            "role": "tool",
                            "tool_call_id": block.get("tool_use_id"),
                            "content": _tool_result(block.get("content")),
                        }
                    )
                else:
                    parts.append(_part(block))
            if parts:
                messages.append({"role": "user", "content": parts})
        else:
            messages.append(_assistant(content))
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    if body.get("tools"):
        out["tools"] = [_tool(t) for t in body["tools"]]
    _tool_choice(body.get("tool_choice"), out)
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _output_config(body.get("output_config"), out)
    for name, value in body.items():
        if name not in _TRANSLATED and value is not None:
            out[name] = value  # Anthropic's own (top_k, thinking, …): each backend decides
    return out


#: The Messages fields ``to_chat_request`` translates; the others are carried into the
#: canonical body under their own names, where each backend's dialect translates, passes or
#: refuses them (``FIELDS`` of ``openai_anthropic``, ``openai_gemini``).
_TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "metadata",
        "tools",
        "tool_choice",
        "stream",
        "output_config",
    }
)


def _output_config(config: Any, out: dict[str, Any]) -> None:
    """``output_config``: ``format`` (structured outputs) → ``response_format``, ``effort`` →
    ``reasoning_effort``."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise InvalidField("output_config", "expected an object")
    fmt = config.get("format")
    if fmt is not None:
        schema = fmt.get("schema") if isinstance(fmt, dict) else None
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            raise InvalidField("output_config.format.type", "expected 'json_schema'")
        if not isinstance(schema, dict):
            raise InvalidField("output_config.format.schema", "expected a JSON Schema object")
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    if config.get("effort") is not None:
        out["reasoning_effort"] = config["effort"]
    unknown = sorted(set(config) - {"format", "effort"})
    if unknown:
        raise InvalidField(f"output_config.{unknown[0]}", "is not translated by Sluice")


def _part(block: dict[str, Any]) -> dict[str, Any]:
    kind = block.get("type")
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    assert isinstance(source, dict)
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image" and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "image" and source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    if kind == "document" and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        return {"type": "file", "file": {"file_data": url}}
    return block


def _tool_result(content: Any) -> Any:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return [_part(b) for b in content if isinstance(b, dict)]


def _assistant(content: list[dict[str, Any]]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block["type"]
        if kind == "tool_use":
            args = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": args},
                }
            )
        elif kind not in ("thinking", "redacted_thinking"):
            parts.append(_part(block))
    msg: dict[str, Any] = {"role": "assistant", "content": parts or None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        return tool  # a server tool (web search, …): only an Anthropic backend knows it
    fn: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


# --- answer -----------------------------------------------------------------------------------


def usage_obj(u: Any) -> dict[str, int]:
    """Anthropic usage for an OpenAI ``usage`` object (input tokens exclude cached ones)."""
    if not isinstance(u, dict):
        return {"input_tokens": 0, "output_tokens": 0}
    prompt = u.get("prompt_tokens") or 0
    details = u.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    out = {"input_tokens": prompt - cached, "output_tokens": u.get("completion_tokens") or 0}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def _input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if arguments else {}
    except (TypeError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def to_message(completion: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic ``message`` for an OpenAI chat completion. A pure function."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    if msg.get("refusal"):
        content.append({"type": "text", "text": msg["refusal"]})
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": tc.get("id"),
                "name": fn.get("name"),
                "input": _input(fn.get("arguments")),
            }
        )
    return {
        "id": completion.get("id") or "msg",
        "type": "message",
        "role": "assistant",
        "model": completion.get("model") or "",
        "content": content,
        "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": usage_obj(completion.get("usage")),
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (
        kind.encode(),
        json.dumps(data, separators=(",", ":")).encode(),
    )


class EventWriter:
    """OpenAI ``chat.completion.chunk`` objects → Anthropic stream events. Pure; only the first
    choice is shown (Anthropic has no ``n``)."""

    def __init__(self) -> None:
        self._started = False
        self._block: object = None
        self._index = -1
        self._stop = "end_turn"
        self._usage: Any = None

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        self._started = True
        message: dict[str, Any] = {
            "id": chunk.get("id") or "msg",
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [_event("message_start", {"type": "message_start", "message": message})]

    def _switch(self, key: object, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self._block = key
        self._index += 1
        out.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": block},
            )
        )
        return out

    def _close(self) -> list[bytes]:
        if self._block is None:
            return []
        self._block = None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self._index, "delta": delta},
        )

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out = [] if self._started else self._start(chunk)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                if self._block != "text":
                    out += self._switch("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
            for tc in delta.get("tool_calls") or ():
                fn = tc.get("function") or {}
                key = ("tool", tc.get("index", 0))
                if self._block != key:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": tc.get("id") or f"toolu_{key[1]}",
                        "name": fn.get("name") or "",
                        "input": {},
                    }
                    out += self._switch(key, block)
                if fn.get("arguments"):
                    out.append(
                        self._delta({"type": "input_json_delta", "partial_json": fn["arguments"]})
                    )
            if choice.get("finish_reason"):
                self._stop = STOP_REASONS.get(str(choice["finish_reason"]), "end_turn")
        return out

    def end(self) -> list[bytes]:
        out = [] if self._started else self._start({})
        out += self._close()
        delta = {"stop_reason": self._stop, "stop_sequence": None}
        usage = usage_obj(self._usage)
        out.append(
            _event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        )
        out.append(_event("message_stop", {"type": "message_stop"}))
        return out


# --- errors -----------------------------------------------------------------------------------


def error_status(err: SluiceError) -> int:
    """The status of ``err`` for an Anthropic client: an overloaded provider stays 529."""
    return 529 if getattr(err, "overloaded", False) else err.status


def error_object(err: SluiceError) -> dict[str, Any]:
    status = error_status(err)
    etype = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": etype, "message": err.message}}


# --- the dialect ------------------------------------------------------------------------------


class AnthropicAPI:
    """``POST /v1/messages`` as a client API: checks, error shapes, the end of a cut stream."""

    name = "anthropic"
    done = b""
    forward_headers: tuple[str, ...] = ("anthropic-version", "anthropic-beta")

    def parse(self, obj: dict[str, Any], operation: Operation) -> tuple[str, dict[str, Any]]:
        return check(obj), to_chat_request(obj)

    def error_status(self, err: SluiceError) -> int:
        return error_status(err)

    def error_body(self, err: SluiceError) -> bytes:
        return json.dumps(error_object(err), ensure_ascii=False).encode()

    def stream_error(self, err: SluiceError) -> bytes:
        return sse.encode(json.dumps(error_object(err), ensure_ascii=False), "error")

    def length_stop(self, output_tokens: int, chunk: tuple[str, int, str, int]) -> bytes:
        delta = {"stop_reason": "max_tokens", "stop_sequence": None}
        usage = {"output_tokens": output_tokens}
        return _event(
            "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
        ) + _event("message_stop", {"type": "message_stop"})


API = AnthropicAPI()
RESHAPE = CanonicalReshaper(to_message, EventWriter)
