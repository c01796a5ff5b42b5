"""The ``responses_chat`` translator's client half: ``POST /v1/responses``, OpenAI's Responses API
served over any backend that takes the canonical (OpenAI chat) body. Pure: no IO.

Owns the Responses client API (``API``): checking a Responses request and translating it into the
canonical chat body routing and the stages work on — ``instructions`` → a system message; ``input``
(a string, or items: messages with ``input_text``/``output_text``/``input_image``/``input_file``
parts, ``function_call`` and ``function_call_output`` items) → messages; function ``tools`` and
``tool_choice``; ``text.format`` (structured outputs) → ``response_format``;
``max_output_tokens``, ``temperature``, ``top_p``, ``parallel_tool_calls``, ``user``,
``metadata``, ``reasoning.effort`` → their chat names. Fields with no chat equivalent are carried
under their own names and refused by ``STATELESS`` below, with the reason, before a translated
try is sent (``previous_response_id``, ``store: true``, ``include``, built-in tools, …: Sluice
keeps no conversation state; these work on the OpenAI pass-through, ``responses_openai``).

And the answer back (``RESHAPE``): a ``chat.completion`` → a ``response`` object (a ``message``
item with ``output_text``, ``function_call`` items, usage, ``incomplete_details`` for a length or
content-filter stop); ``chat.completion.chunk`` frames → the typed event stream
(``response.created``, ``response.output_item.added``, ``response.output_text.delta``,
``response.function_call_arguments.delta``, … ``response.completed`` with usage). Errors are
OpenAI's ``{"error": …}`` bodies and an ``error`` event in a stream.

The backend halves are the chat pairs' (``openai_openai``, ``openai_anthropic``,
``openai_gemini``) wrapped in ``Stateless``; ``translate.pick`` composes them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .. import errors, sse
from ..errors import InvalidField, SluiceError
from ..model import Operation
from .base import Answer, BackendDialect, Call, Normalised, StreamDecoder
from .chat import CanonicalReshaper

#: Responses fields that need OpenAI's own Responses API (refused on translated tries), and the
#: value of each that asks for nothing.
STATEFUL: dict[str, tuple[Any, ...]] = {
    "previous_response_id": (None,),
    "store": (None, False),
    "conversation": (None,),
    "background": (None, False),
    "include": (None, []),
    "truncation": (None, "disabled"),
    "prompt": (None,),
    "max_tool_calls": (None,),
    "text_verbosity": (None,),
    "reasoning_summary": (None,),
}
_WHY = {
    "previous_response_id": "Sluice is stateless and keeps no responses; send the whole "
    "conversation in 'input', or route to an OpenAI backend (pass-through)",
    "store": "Sluice is stateless and stores no responses; leave 'store' unset or false, or "
    "route to an OpenAI backend (pass-through)",
    "conversation": "Sluice keeps no conversations; send the whole conversation in 'input'",
}
#: The Responses fields ``to_chat_request`` reads.
_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "max_output_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "metadata",
        "reasoning",
        "stream",
        "stream_options",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "top_logprobs",
        *STATEFUL,
    }
)


# --- request ----------------------------------------------------------------------------------


def to_chat_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(model, canonical chat body) for a Responses request; 400 naming the field when it is
    wrong. A pure function."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidField("model", "expected a non-empty string")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise InvalidField(unknown[0], "is not a Responses API field Sluice knows")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidField("instructions", "expected a string")
        messages.append({"role": "system", "content": instructions})
    inp = body.get("input")
    if isinstance(inp, str):
        messages.append({"role": "user", "content": inp})
    elif isinstance(inp, list):
        for i, item in enumerate(inp):
            _item(item, f"input[{i}]", messages)
    else:
        raise InvalidField("input", "expected a string or an array of input items")
    if not messages:
        raise InvalidField("input", "must contain at least one item")
    out: dict[str, Any] = {"model": model, "messages": messages}
    _params(body, out)
    return model, out


def _item(item: Any, path: str, messages: list[dict[str, Any]]) -> None:
    if not isinstance(item, dict):
        raise InvalidField(path, "expected an input item object")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidField(f"{path}.role", "expected user, assistant, system or developer")
        messages.append({"role": role, "content": _content(item.get("content"), path)})
    elif kind == "function_call":
        call = {
            "id": _str(item, "call_id", path),
            "type": "function",
            "function": {
                "name": _str(item, "name", path),
                "arguments": _str(item, "arguments", path),
            },
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_call_id" not in last:
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        content = output if isinstance(output, str) else _content(output, f"{path}.output")
        messages.append(
            {"role": "tool", "tool_call_id": _str(item, "call_id", path), "content": content}
        )
    elif kind == "reasoning":
        raise InvalidField(
            f"{path}.type",
            "reasoning items can only be sent back to OpenAI (pass-through); this route's "
            "backend answers through chat completions",
        )
    else:
        raise InvalidField(f"{path}.type", f"input items of type {kind!r} are not translated")


def _str(item: dict[str, Any], name: str, path: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise InvalidField(f"{path}.{name}", "expected a string")
    return value


def _content(content: Any, path: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidField(f"{path}.content", "expected a string or an array of content parts")
    parts: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        ppath = f"{path}.content[{k}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and isinstance(part.get("file_data"), str):
            file = {"file_data": part["file_data"]}
            if part.get("filename"):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        else:
            raise InvalidField(ppath, f"content parts of type {kind!r} are not translated")
    return parts


def _params(body: dict[str, Any], out: dict[str, Any]) -> None:
    for ours, theirs in (
        ("max_output_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("parallel_tool_calls", "parallel_tool_calls"),
        ("user", "user"),
        ("metadata", "metadata"),
        ("service_tier", "service_tier"),
        ("safety_identifier", "safety_identifier"),
        ("prompt_cache_key", "prompt_cache_key"),
        ("top_logprobs", "top_logprobs"),
        *((k, k) for k in STATEFUL),
    ):
        if body.get(ours) is not None:
            out[theirs] = body[ours]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise InvalidField("tools", "expected an array of tool objects")
        out["tools"] = [_tool(t) for t in tools]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        out["tool_choice"] = choice
    text = body.get("text")
    if text is not None:
        if not isinstance(text, dict):
            raise InvalidField("text", "expected an object")
        _format(text.get("format"), out)
        if text.get("verbosity") is not None:
            out["text_verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):
        if reasoning.get("effort") is not None:
            out["reasoning_effort"] = reasoning["effort"]
        if reasoning.get("summary") is not None:
            out["reasoning_summary"] = reasoning["summary"]


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        return tool  # a built-in tool: only OpenAI's Responses API has it (``Stateless``)
    fn: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}


def _format(fmt: Any, out: dict[str, Any]) -> None:
    """``text.format`` → ``response_format`` (structured outputs)."""
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    assert isinstance(fmt, dict) or kind is None
    if kind == "text":
        return
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind == "json_schema" and isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        schema: dict[str, Any] = {"name": fmt.get("name") or "output", "schema": fmt["schema"]}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise InvalidField(
            "text.format", "expected {'type': 'text' | 'json_object' | 'json_schema', …}"
        )


# --- the stateless backend half ---------------------------------------------------------------


class Stateless:
    """A chat backend half serving a Responses request: refuses (400, saying why) what only
    OpenAI's Responses API can do, then sends the chat body."""

    def __init__(self, inner: BackendDialect) -> None:
        self.inner = inner
        self.name = inner.name
        self.operations = inner.operations

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        body = dict(call.body)
        backend = f"backend '{call.backend.name}' ({call.backend.provider})"
        for name, noop in STATEFUL.items():
            value = body.pop(name, None)
            if value in noop:
                continue
            field = name.replace("text_verbosity", "text.verbosity").replace(
                "reasoning_summary", "reasoning.summary"
            )
            why = _WHY.get(name, "only OpenAI's Responses API has it (pass-through)")
            raise InvalidField(field, f"cannot be served by {backend}: {why}")
        for i, tool in enumerate(body.get("tools") or ()):
            if isinstance(tool, dict) and tool.get("type") != "function":
                raise InvalidField(
                    f"tools[{i}].type",
                    f"built-in tool {tool.get('type')!r} cannot be served by {backend}: only "
                    "OpenAI's Responses API has it",
                )
        return self.inner.request(dataclasses.replace(call, body=body))

    def normalise_error(
        self, status: int, code: str | None, etype: str | None, message: str
    ) -> Normalised:
        return self.inner.normalise_error(status, code, etype, message)

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        return self.inner.answer(call, raw, obj, created)

    def stream(self, call: Call, created: int) -> StreamDecoder:
        return self.inner.stream(call, created)


# --- answer -----------------------------------------------------------------------------------


def usage_obj(u: Any) -> dict[str, Any] | None:
    """The Responses ``usage`` for a chat ``usage`` object."""
    if not isinstance(u, dict):
        return None
    prompt = u.get("prompt_tokens") or 0
    completion = u.get("completion_tokens") or 0
    details = u.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response(
    id_: str,
    created: int,
    model: str,
    output: list[dict[str, Any]],
    *,
    usage: dict[str, Any] | None,
    finish: str | None,
    status: str | None = None,
) -> dict[str, Any]:
    """A ``response`` object."""
    reason = _INCOMPLETE.get(finish or "")
    return {
        "id": id_ if id_.startswith("resp_") else f"resp_{id_}",
        "object": "response",
        "created_at": created,
        "status": status or ("incomplete" if reason else "completed"),
        "error": None,
        "incomplete_details": {"reason": reason} if reason else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": None,
        "store": False,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


def _message_item(id_: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": id_,
        "status": status,
        "role": "assistant",
        "content": content if text or status == "completed" else [],
    }


def _call_item(
    call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def to_response(completion: dict[str, Any]) -> dict[str, Any]:
    """The ``response`` object for a chat completion. A pure function."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    rid = str(completion.get("id") or "sluice")
    output: list[dict[str, Any]] = []
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if msg.get("refusal"):
        refusal = {"type": "refusal", "refusal": msg["refusal"]}
        item = _message_item(f"msg_{rid}", "")
        item["content"] = [refusal]
        output.append(item)
    elif text:
        output.append(_message_item(f"msg_{rid}", text))
    for tc in msg.get("tool_calls") or ():
        fn = tc.get("function") or {}
        output.append(
            _call_item(str(tc.get("id")), str(fn.get("name")), str(fn.get("arguments") or ""))
        )
    return response(
        rid,
        int(completion.get("created") or 0),
        str(completion.get("model") or ""),
        output,
        usage=usage_obj(completion.get("usage")),
        finish=choice.get("finish_reason"),
    )


class EventWriter:
    """``chat.completion.chunk`` objects → Responses stream events. Pure; the first choice only
    (the Responses API has no ``n``)."""

    def __init__(self) -> None:
        self._seq = 0
        self._head: dict[str, Any] | None = None
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None
        self._usage: Any = None

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return sse.encode(json.dumps(data, separators=(",", ":"), ensure_ascii=False), kind)

    def _response(self, status: str | None = None) -> dict[str, Any]:
        head = self._head or {}
        return response(
            head.get("id", "sluice"),
            head.get("created", 0),
            head.get("model", ""),
            list(self._output),
            usage=usage_obj(self._usage),
            finish=self._finish,
            status=status,
        )

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        self._head = {
            "id": str(chunk.get("id") or "sluice"),
            "created": int(chunk.get("created") or 0),
            "model": str(chunk.get("model") or ""),
        }
        resp = self._response("in_progress")
        return [
            self._event("response.created", {"response": resp}),
            self._event("response.in_progress", {"response": resp}),
        ]

    def _close(self) -> list[bytes]:
        item, self._open = self._open, None
        if item is None:
            return []
        index = len(self._output)
        where = {"item_id": item["id"], "output_index": index}
        out: list[bytes] = []
        if item["type"] == "message":
            text = "".join(self._text)
            self._text = []
            done = _message_item(item["id"], text)
            part = done["content"][0]
            out.append(
                self._event(
                    "response.output_text.done",
                    {**where, "content_index": 0, "text": text, "logprobs": []},
                )
            )
            out.append(
                self._event(
                    "response.content_part.done", {**where, "content_index": 0, "part": part}
                )
            )
        else:
            done = _call_item(item["call_id"], item["name"], item["arguments"])
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    {**where, "name": item["name"], "arguments": item["arguments"]},
                )
            )
        self._output.append(done)
        out.append(self._event("response.output_item.done", {"output_index": index, "item": done}))
        return out

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out = [] if self._head is not None else self._start(chunk)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                out += self._text_delta(str(text))
            for tc in delta.get("tool_calls") or ():
                out += self._call_delta(tc)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        return out

    def _text_delta(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open is None or self._open["type"] != "message":
            out += self._close()
            head = self._head or {}
            item = _message_item(
                f"msg_{head.get('id', 'sluice')}_{len(self._output)}", "", "in_progress"
            )
            self._open = item
            where = {"output_index": len(self._output)}
            out.append(self._event("response.output_item.added", {**where, "item": item}))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(
                self._event(
                    "response.content_part.added",
                    {**where, "item_id": item["id"], "content_index": 0, "part": part},
                )
            )
        self._text.append(text)
        assert self._open is not None
        where = {"item_id": self._open["id"], "output_index": len(self._output)}
        out.append(
            self._event(
                "response.output_text.delta",
                {**where, "content_index": 0, "delta": text, "logprobs": []},
            )
        )
        return out

    def _call_delta(self, tc: Any) -> list[bytes]:
        if not isinstance(tc, dict):
            return []
        fn = tc.get("function") or {}
        key = tc.get("index", 0)
        out: list[bytes] = []
        item = self._calls.get(key)
        if item is None:
            out += self._close()
            call_id = str(tc.get("id") or f"call_{len(self._output)}")
            item = {
                "type": "function_call",
                "id": f"fc_{call_id}",
                "call_id": call_id,
                "name": str(fn.get("name") or ""),
                "arguments": "",
            }
            self._calls[key] = self._open = item
            added = _call_item(call_id, item["name"], "", "in_progress")
            out.append(
                self._event(
                    "response.output_item.added",
                    {"output_index": len(self._output), "item": added},
                )
            )
        args = fn.get("arguments")
        if args and item is self._open:
            item["arguments"] += args
            where = {"item_id": item["id"], "output_index": len(self._output)}
            out.append(
                self._event("response.function_call_arguments.delta", {**where, "delta": args})
            )
        return out

    def end(self) -> list[bytes]:
        out = self._close()
        resp = self._response()
        kind = "response.completed" if resp["status"] == "completed" else "response.incomplete"
        out.append(self._event(kind, {"response": resp}))
        return out


class ResponsesAPI:
    """``POST /v1/responses`` as a client API: checks, error shapes, the end of a cut stream."""

    name = "responses"
    done = b""
    forward_headers: tuple[str, ...] = ()

    def parse(self, obj: dict[str, Any], operation: Operation) -> tuple[str, dict[str, Any]]:
        return to_chat_request(obj)

    def error_status(self, err: SluiceError) -> int:
        return err.status

    def error_body(self, err: SluiceError) -> bytes:
        return errors.error_body(err)

    def stream_error(self, err: SluiceError) -> bytes:
        data = {
            "type": "error",
            "sequence_number": 0,
            "code": err.code,
            "message": err.message,
            "param": err.param,
        }
        return sse.encode(json.dumps(data, ensure_ascii=False), "error")

    def length_stop(self, output_tokens: int, chunk: tuple[str, int, str, int]) -> bytes:
        id_, created, model, _ = chunk
        usage = {"prompt_tokens": 0, "completion_tokens": output_tokens}
        resp = response(id_, created, model, [], usage=usage_obj(usage), finish="length")
        data = {"type": "response.incomplete", "sequence_number": 0, "response": resp}
        return sse.encode(json.dumps(data, ensure_ascii=False), "response.incomplete")


API = ResponsesAPI()
RESHAPE = CanonicalReshaper(to_response, EventWriter)
