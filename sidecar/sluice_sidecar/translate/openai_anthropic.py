"""The ``openai_anthropic`` translator: OpenAI chat requests to Anthropic's ``POST /v1/messages``
and its answers back. Pure: no IO.

Owns the translation in both directions between the OpenAI chat format the sidecar serves and
Anthropic's wire format (``DIALECT`` is the backend half the request path uses):

* request: system/developer messages → top-level ``system`` (a string, or text blocks when the
  client sent parts); text, images (``data:`` URLs → base64 source, http(s) → url source) and PDF
  files → content blocks; assistant ``tool_calls`` → ``tool_use`` blocks; ``tool`` messages →
  ``tool_result`` blocks in a user turn; consecutive turns of one role merged (Anthropic wants
  them alternating); ``tools``/``tool_choice``/``parallel_tool_calls``; ``max_tokens`` (or
  ``max_completion_tokens``, or the config's default: Anthropic requires one); ``stop`` →
  ``stop_sequences``; ``temperature`` clamped to Anthropic's 0…1; ``user`` → ``metadata.user_id``;
  structured outputs (``response_format`` json_schema) and ``reasoning_effort`` →
  ``output_config``; a field Anthropic cannot honour (``n > 1``, ``logprobs``, ``seed``, …) is
  a 400 naming it (``FIELDS``); an Anthropic client's ``anthropic-version``/``anthropic-beta``
  headers are forwarded.
  Content parts and tools of an unknown type pass through as they are (Anthropic blocks).
* answer: text and ``tool_use`` blocks → ``content`` and ``tool_calls``; thinking blocks are not
  shown; ``stop_reason`` → ``finish_reason`` (``STOP_REASONS``); usage incl. cache tokens
  (OpenAI's ``prompt_tokens`` = input + cache creation + cache read; ``cached_tokens`` = read).
* stream: ``StreamTranslator`` turns ``message_start`` … ``message_stop`` into chunks. It emits
  nothing until the first content, so an ``overloaded_error`` event before any content is a
  failure the pipeline can still retry invisibly; an ``error`` event becomes an
  ``UpstreamStreamError`` of the right failure class.
* errors: ``normalise_error`` maps Anthropic's error types (and HTTP 529) to OpenAI's vocabulary
  so fallback rules treat them like any provider's.

The pass-through of an Anthropic client's own body is another pair: ``anthropic_anthropic``.
"""

from __future__ import annotations

import json
from typing import Any

from .. import errors, sse
from ..model import Operation, Usage
from . import chat
from .base import Answer, Call, EventStream, Normalised, dumps, loads_event, refuse_unknown

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
STOP_REASONS = {
    "end_turn": "stop",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}
#: Anthropic error type → (OpenAI type, code) for errors in a body or a stream.
ERROR_TYPES = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "model_not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_exceeded", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded"),
    "timeout_error": ("server_error", "timeout"),
}
_PARAMS = ("top_p", "top_k", "thinking", "container", "mcp_servers", "context_management")
#: How each canonical (OpenAI chat) request field reaches Anthropic; anything else is a 400.
FIELDS = {
    "model": "translated: the backend's model",
    "messages": "translated: messages, system",
    "stream": "translated: stream",
    "stream_options": "translated: usage is always reported",
    "max_tokens": "translated: max_tokens",
    "max_completion_tokens": "translated: max_tokens",
    "temperature": "translated: temperature, clamped to 0…1",
    "top_p": "translated: top_p",
    "top_k": "translated: top_k",
    "stop": "translated: stop_sequences",
    "tools": "translated: tools (input_schema)",
    "tool_choice": "translated: tool_choice",
    "parallel_tool_calls": "translated: tool_choice.disable_parallel_tool_use",
    "user": "translated: metadata.user_id",
    "metadata": "translated: only user_id is sent (OpenAI's tags need store)",
    "response_format": "translated: output_config.format (json_schema; json_object refused)",
    "reasoning_effort": "translated: output_config.effort",
    "thinking": "passed: Anthropic's own (from an Anthropic client)",
    "container": "passed: Anthropic's own (from an Anthropic client)",
    "mcp_servers": "passed: Anthropic's own (from an Anthropic client)",
    "context_management": "passed: Anthropic's own (from an Anthropic client)",
    "n": "refused unless 1: Anthropic returns one choice (no fan-out)",
    "logprobs": "refused: Anthropic has no log probabilities",
    "top_logprobs": "refused: Anthropic has no log probabilities",
    "seed": "refused: Anthropic has no seed",
    "presence_penalty": "refused unless 0: Anthropic has no penalties",
    "frequency_penalty": "refused unless 0: Anthropic has no penalties",
    "logit_bias": "refused: Anthropic has no logit bias",
    "store": "refused: Sluice and Anthropic do not store completions",
    "service_tier": "refused unless auto/default: OpenAI's tiers",
}


# --- request --------------------------------------------------------------------------------


def url_of(base_url: str | None) -> str:
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


def headers_for(call: Call) -> dict[str, str]:
    """The headers of a Messages request for ``call``: an Anthropic client's own
    ``anthropic-version`` and ``anthropic-beta`` are forwarded (``Call.client_headers``)."""
    client = call.client_headers
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if call.stream else "application/json",
        "anthropic-version": client.get("anthropic-version") or API_VERSION,
        "X-Request-Id": call.request_id,
    }
    if "anthropic-beta" in client:
        headers["anthropic-beta"] = client["anthropic-beta"]
    if call.api_key:
        headers["x-api-key"] = call.api_key
    return headers


def to_messages_request(
    body: dict[str, Any], model: str, default_max_tokens: int
) -> dict[str, Any]:
    """An Anthropic Messages request for an OpenAI chat request. A pure function."""
    system: list[dict[str, Any]] = []
    system_is_text = True
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(body.get("messages") or ()):
        path = f"messages[{i}]"
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            if isinstance(content, list):
                system_is_text = False
            system += _blocks(content, path + ".content")
            continue
        if role == "user":
            _append(turns, "user", _blocks(content, path + ".content"), keep_str=content)
        elif role == "assistant":
            blocks = _blocks(content, path + ".content")
            for j, tc in enumerate(m.get("tool_calls") or ()):
                fn = tc.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tc.get("id"),
                        "name": fn.get("name"),
                        "input": chat.json_arguments(
                            fn.get("arguments"), f"{path}.tool_calls[{j}].function.arguments"
                        ),
                    }
                )
            keep = content if not m.get("tool_calls") else None
            _append(turns, "assistant", blocks, keep_str=keep)
        elif role in ("tool", "function"):
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id") or m.get("name"),
            }
            if isinstance(content, list):
                result["content"] = _blocks(content, path + ".content")
            elif content is not None:
                result["content"] = content
            _append(turns, "user", [result])
        else:
            raise errors.InvalidField(path + ".role", f"unknown role {role!r}")
    out: dict[str, Any] = {"model": model, "messages": turns}
    if system:
        if system_is_text:
            out["system"] = "\n\n".join(b["text"] for b in system)
        else:
            out["system"] = system
    _params(body, out, default_max_tokens)
    return out


def _params(body: dict[str, Any], out: dict[str, Any], default_max_tokens: int) -> None:
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = max_tokens if isinstance(max_tokens, int) else default_max_tokens
    temperature = body.get("temperature")
    if isinstance(temperature, int | float):
        out["temperature"] = min(max(float(temperature), 0.0), 1.0)
    for name in _PARAMS:
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(t) for t in tools]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and (tools or choice.get("type") == "none"):
        out["tool_choice"] = choice
    config = _output_config(body)
    if config:
        out["output_config"] = config


def _output_config(body: dict[str, Any]) -> dict[str, Any]:
    """``output_config`` for ``response_format`` (structured outputs) and ``reasoning_effort``."""
    config: dict[str, Any] = {}
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") not in (None, "text"):
        if rf.get("type") != "json_schema":
            raise errors.InvalidField(
                "response_format.type",
                f"{rf.get('type')!r} cannot be sent to Anthropic, whose structured outputs "
                "need a schema: send {'type': 'json_schema', 'json_schema': {'schema': …}}",
            )
        schema = (rf.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise errors.InvalidField("response_format.json_schema.schema", "expected an object")
        config["format"] = {"type": "json_schema", "schema": schema}
    effort = body.get("reasoning_effort")
    if isinstance(effort, str):
        config["effort"] = effort
    return config


def _append(
    turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]], keep_str: Any = None
) -> None:
    """Add a turn, merging it into the previous one of the same role."""
    if turns and turns[-1]["role"] == role:
        prev = turns[-1]
        if isinstance(prev["content"], str):
            prev["content"] = [{"type": "text", "text": prev["content"]}]
        prev["content"].extend(blocks)
    elif isinstance(keep_str, str):
        turns.append({"role": role, "content": keep_str})
    else:
        turns.append({"role": role, "content": blocks})


def _blocks(content: Any, path: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out = []
    for k, part in enumerate(content):
        ppath = f"{path}[{k}]"
        if not isinstance(part, dict):
            raise errors.InvalidField(ppath, "expected an object")
        kind = part.get("type")
        if kind == "text":
            out.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            out.append(_image(chat.image_url_of(part), ppath))
        elif kind == "file":
            f = part.get("file") or {}
            media, data = chat.data_url(str(f.get("file_data", "")), ppath + ".file.file_data")
            source = {"type": "base64", "media_type": media, "data": data}
            out.append({"type": "document", "source": source})
        elif kind in ("input_audio", "refusal"):
            raise errors.InvalidField(ppath, f"{kind!r} content cannot be sent to Anthropic")
        else:  # an Anthropic block carried through the canonical body as it is
            out.append(part)
    return out


def _image(url: str | None, path: str) -> dict[str, Any]:
    if url is None:
        raise errors.InvalidField(path, "an image_url part needs a url")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media, data = chat.data_url(url, path + ".image_url.url")
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        return tool
    fn = tool.get("function") or {}
    out: dict[str, Any] = {
        "name": fn.get("name"),
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        out = {"type": "tool", "name": name} if name else {"type": "auto"}
    else:
        out = None
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


# --- answer ---------------------------------------------------------------------------------


def usage_of(u: Any) -> Usage | None:
    """Usage from an Anthropic ``usage`` object (message or message_start)."""
    if not isinstance(u, dict) or not isinstance(u.get("input_tokens"), int):
        return None
    created = u.get("cache_creation_input_tokens") or 0
    read = u.get("cache_read_input_tokens") or 0
    out = u.get("output_tokens") or 0
    return Usage(u["input_tokens"] + created + read, out, read)


def to_chat_completion(msg: dict[str, Any], created: int) -> tuple[dict[str, Any], Usage | None]:
    """(OpenAI chat completion, usage) for an Anthropic message. A pure function."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            args = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(chat.tool_call(str(block.get("id")), str(block.get("name")), args))
    finish = STOP_REASONS.get(str(msg.get("stop_reason")), "stop")
    usage = usage_of(msg.get("usage"))
    choice = {
        "index": 0,
        "message": chat.message("".join(texts) if texts else None, calls),
        "finish_reason": finish,
        "logprobs": None,
    }
    body = chat.completion(
        str(msg.get("id", "")), created, str(msg.get("model", "")), [choice], usage
    )
    return body, usage


def normalise_error(
    status: int, code: str | None, etype: str | None, message: str
) -> tuple[int, str | None, str | None]:
    """Anthropic's error answer in OpenAI's vocabulary (``BackendDialect.normalise_error``)."""
    text = message.lower()
    if "prompt is too long" in text or "context window" in text or "too many tokens" in text:
        return status, "context_length_exceeded", "invalid_request_error"
    if "content filtering" in text or "content policy" in text:
        return status, "content_filter", "invalid_request_error"
    if etype in ERROR_TYPES:
        otype, ocode = ERROR_TYPES[etype]
        return status, ocode or code, otype
    return status, code, etype


def stream_error(obj: dict[str, Any], backend: str) -> errors.UpstreamStreamError:
    """The failure an ``error`` event of an Anthropic stream (or body) stands for."""
    err = obj.get("error") if isinstance(obj.get("error"), dict) else {}
    assert isinstance(err, dict)
    etype = str(err.get("type") or "api_error")
    message = str(err.get("message") or etype)
    out = errors.UpstreamStreamError(
        f"Backend '{backend}' reported {etype}: {errors.sanitise(message)}", backend=backend
    )
    status = {"rate_limit_error": 429, "overloaded_error": 529, "api_error": 500}.get(etype, 400)
    if etype == "overloaded_error":
        out.set_overloaded()
    _, code, _ = normalise_error(status, None, etype, message)
    out.failure = errors.classify_status(status, code, message)
    if out.failure is None:
        out.counts_for_breaker = False
    return out


class StreamTranslator(EventStream):
    """Anthropic stream events → OpenAI chunk frames. Pure; feed it events in order."""

    def __init__(self, backend: str, created: int, wants_usage: bool) -> None:
        super().__init__(backend)
        self.created = created
        self.wants_usage = wants_usage
        self.usage: Usage | None = None
        self.complete = False
        self.finished = False
        self.content_chunks = 0
        self._w: chat.ChunkWriter | None = None
        self._tools: dict[int, int] = {}

    def _writer(self) -> chat.ChunkWriter:
        if self._w is None:
            self._w = chat.ChunkWriter("msg", self.created, "")
        return self._w

    def event(self, ev: sse.Event) -> list[bytes]:
        data = loads_event(ev, self.backend)
        kind = data.get("type") or ev.event
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                self.content_chunks += 1
                return [self._writer().text(str(delta.get("text", "")))]
            if dtype == "input_json_delta":
                index = self._tools.get(data.get("index", -1))
                if index is None:
                    return []
                self.content_chunks += 1
                fn = {"arguments": str(delta.get("partial_json", ""))}
                return [self._writer().delta({"tool_calls": [{"index": index, "function": fn}]})]
            return []  # thinking, signature and citation deltas are not shown
        if kind == "message_start":
            msg = data.get("message") or {}
            self._w = chat.ChunkWriter(
                str(msg.get("id", "msg")), self.created, str(msg.get("model", ""))
            )
            self.usage = usage_of(msg.get("usage"))
            return []
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools[data.get("index", -1)] = len(self._tools)
                self.content_chunks += 1
                tc = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._writer().delta({"tool_calls": [tc]})]
            if block.get("type") == "text" and block.get("text"):
                self.content_chunks += 1
                return [self._writer().text(str(block["text"]))]
            return []
        if kind == "message_delta":
            self._usage_delta(data.get("usage"))
            reason = (data.get("delta") or {}).get("stop_reason")
            self.complete = True
            out = [self._writer().finish(STOP_REASONS.get(str(reason), "stop"))]
            if self.wants_usage and self.usage is not None:
                out.append(self._writer().usage(self.usage))
            return out
        if kind == "message_stop":
            self.finished = True
            return []
        if kind == "error":
            raise stream_error(data, self.backend)
        return []  # ping, content_block_stop, and event types Anthropic adds in future

    def _usage_delta(self, u: Any) -> None:
        if not isinstance(u, dict):
            return
        base = self.usage or Usage(0, 0)
        if isinstance(u.get("input_tokens"), int):
            merged = {
                "input_tokens": u["input_tokens"],
                "cache_creation_input_tokens": u.get("cache_creation_input_tokens") or 0,
                "cache_read_input_tokens": u.get("cache_read_input_tokens") or 0,
                "output_tokens": u.get("output_tokens") or 0,
            }
            self.usage = usage_of(merged)
        elif isinstance(u.get("output_tokens"), int):
            self.usage = Usage(base.input_tokens, u["output_tokens"], base.cached_input_tokens)


class AnthropicDialect:
    """The backend half of ``openai_anthropic``: canonical chat requests to Messages requests,
    Messages answers and events to canonical ones."""

    name = "anthropic"
    operations: frozenset[Operation] = frozenset({"chat"})

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        refuse_unknown(call.body, FIELDS, call)
        body = to_messages_request(call.body, call.backend.model, call.default_max_tokens)
        if call.stream:
            body["stream"] = True
        return url_of(call.backend.base_url), dumps(body), headers_for(call)

    def normalise_error(
        self, status: int, code: str | None, etype: str | None, message: str
    ) -> Normalised:
        return normalise_error(status, code, etype, message)

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        if obj.get("type") == "error":
            raise stream_error(obj, call.backend.name)
        body, usage = to_chat_completion(obj, created)
        return Answer(json.dumps(body, separators=(",", ":")).encode(), usage)

    def stream(self, call: Call, created: int) -> StreamTranslator:
        return StreamTranslator(call.backend.name, created, call.client_wants_usage)


DIALECT = AnthropicDialect()
