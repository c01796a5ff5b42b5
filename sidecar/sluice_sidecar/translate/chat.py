"""The canonical (OpenAI chat) shapes that translating providers produce: bodies, chunks, usage.

Owns how a provider that does not speak OpenAI (Anthropic, Gemini) writes its answer in the
format the sidecar serves: the ``chat.completion`` body, ``chat.completion.chunk`` SSE frames
(``ChunkWriter`` pre-encodes the constant head of a stream's chunks once, so a text delta costs
one ``json.dumps`` of the text), the usage object, and the parsing of ``data:`` URLs in image and
file parts. Pure: no IO.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from .. import errors, sse
from ..model import Usage


def usage_dict(usage: Usage) -> dict[str, Any]:
    """The OpenAI ``usage`` object for ``usage`` (prompt tokens include cached tokens)."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }
    if usage.cached_input_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_input_tokens}
    return out


def completion(
    id_: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage: Usage | None,
) -> dict[str, Any]:
    """A ``chat.completion`` body."""
    out: dict[str, Any] = {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage_dict(usage)
    return out


def message(
    text: str | None, tool_calls: list[dict[str, Any]], *, refusal: str | None = None
) -> dict[str, Any]:
    """An assistant message: ``content`` (None when there is no text) and ``tool_calls``."""
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    if refusal is not None:
        msg["refusal"] = refusal
    return msg


def tool_call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


class ChunkWriter:
    """Encodes the ``chat.completion.chunk`` frames of one stream. The first delta of each choice
    carries ``role: assistant``."""

    __slots__ = ("_head", "_roles", "_tail")

    def __init__(self, id_: str, created: int, model: str) -> None:
        head = json.dumps(
            {"id": id_, "object": "chat.completion.chunk", "created": created, "model": model},
            separators=(",", ":"),
        )
        self._head = b"data: " + head[:-1].encode() + b',"choices":['
        self._tail = b"]}\n\n"
        self._roles: set[int] = set()

    def delta(self, delta: dict[str, Any], index: int = 0) -> bytes:
        if index not in self._roles:
            self._roles.add(index)
            delta = {"role": "assistant", **delta}
        return (
            self._head
            + b'{"index":%d,"delta":' % index
            + json.dumps(delta, separators=(",", ":")).encode()
            + b',"finish_reason":null}'
            + self._tail
        )

    def text(self, text: str, index: int = 0) -> bytes:
        if index not in self._roles:
            return self.delta({"content": text}, index)
        return (
            self._head
            + b'{"index":%d,"delta":{"content":' % index
            + json.dumps(text).encode()
            + b'},"finish_reason":null}'
            + self._tail
        )

    def finish(self, reason: str, index: int = 0) -> bytes:
        delta = b"{}" if index in self._roles else b'{"role":"assistant"}'
        self._roles.add(index)
        return (
            self._head
            + b'{"index":%d,"delta":%s,"finish_reason":%s}'
            % (index, delta, json.dumps(reason).encode())
            + self._tail
        )

    def usage(self, usage: Usage) -> bytes:
        return (
            self._head
            + b'],"usage":'
            + json.dumps(usage_dict(usage), separators=(",", ":")).encode()
            + b"}\n\n"
        )


def finish_chunk(id_: str, created: int, model: str, reason: str, choices: int = 1) -> bytes:
    """One ``chat.completion.chunk`` frame ending ``choices`` choices with ``reason``."""
    obj = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {"index": i, "delta": {}, "finish_reason": reason} for i in range(max(1, choices))
        ],
    }
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def data_url(url: str, path: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL; 400 otherwise."""
    head, comma, data = url.partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        raise errors.InvalidField(path, "expected an http(s) URL or a data:<type>;base64,… URL")
    return head[5:-7] or "application/octet-stream", data


def image_url_of(part: dict[str, Any]) -> str | None:
    """The URL of an OpenAI ``image_url`` part (a string or ``{"url": …}``)."""
    iu = part.get("image_url")
    if isinstance(iu, dict):
        iu = iu.get("url")
    return iu if isinstance(iu, str) else None


def text_of(content: Any) -> str:
    """The text of an OpenAI message content (a string, or the text of its text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def json_arguments(arguments: Any, path: str) -> Any:
    """A tool call's ``arguments`` (a JSON string) as a value; 400 when it is not JSON."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        raise errors.InvalidField(path, "expected a JSON string")
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):
        raise errors.InvalidField(path, "is not valid JSON") from None


class EventWriter(Protocol):
    """A client dialect's events for canonical ``chat.completion.chunk`` objects."""

    def feed(self, chunk: dict[str, Any]) -> list[bytes]: ...

    def end(self) -> list[bytes]: ...


class ChunkReshape:
    """Canonical chunk frames → a client dialect's events (``writer``), for one stream."""

    __slots__ = ("_parser", "_writer")

    def __init__(self, writer: EventWriter) -> None:
        self._writer = writer
        self._parser = sse.Parser()

    def feed(self, frames: bytes) -> bytes:
        out: list[bytes] = []
        for ev in self._parser.feed(frames):
            obj = json.loads(ev.data)
            if isinstance(obj, dict):
                out += self._writer.feed(obj)
        return b"".join(out)

    def end(self) -> bytes:
        return b"".join(self._writer.end())


class CanonicalReshaper:
    """The client half of a pair that goes through the canonical body: ``to_client`` turns a
    whole ``chat.completion`` into the client's answer, ``writer`` makes the event writer of one
    stream."""

    __slots__ = ("_to_client", "_writer")

    def __init__(
        self,
        to_client: Callable[[dict[str, Any]], dict[str, Any]],
        writer: Callable[[], EventWriter],
    ) -> None:
        self._to_client = to_client
        self._writer = writer

    def answer(self, body: bytes) -> bytes:
        return json.dumps(self._to_client(json.loads(body)), separators=(",", ":")).encode()

    def stream(self) -> ChunkReshape:
        return ChunkReshape(self._writer())
