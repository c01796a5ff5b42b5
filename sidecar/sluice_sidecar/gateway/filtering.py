"""The stages' stream filters applied to a canonical stream, chunk by chunk.

Owns ``ChunkFilters``: it reads the ``chat.completion.chunk`` frames of one stream and hands each
streamed text of each choice — its content, and the ``function.arguments`` of each of its tool
calls (tool-call arguments also through a ``JsonTextGuard``, so redacted JSON still parses) —
through that text's own ``DeltaFilter``s (in stage order, asked once per text), and writes the
chunks back with the text the filters released. A choice's texts come one after another: when
the next one starts (a tool call after the content, the next tool call), what the filters of
the previous one hold is released first (a chunk of its own), so each text is checked whole, as
a unary answer's are, and every client dialect sees its parts in order. Content held back at
the end is released before the choice's ``finish_reason`` (in the same chunk). When a filter
blocks, the choice ends with ``finish_reason: content_filter`` (nothing of the blocked text,
no further tool-call delta) and ``blocked`` is set: the caller ends the stream there
(``[DONE]`` for OpenAI clients); every filter is finished so its verdicts are recorded. A frame
it cannot read is never passed unchecked: it ends the stream the same way. ``feed`` is async
(a filter may ``settle``: ask an external classifier before a text's end is released);
``feed_now`` takes the usual chunks, whose texts all go on, without a coroutine, and leaves
the rest of the frames, from the first event that ends a text, to ``feed``. Pure: no IO.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from ..errors import GuardrailBlocked, SluiceError
from ..stage import DeltaFilter, JsonTextGuard

_DATA = b"data: "
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode(obj: dict[str, Any]) -> bytes:
    try:
        return _DATA + orjson.dumps(obj) + b"\n\n"
    except TypeError:  # what orjson cannot say (integers beyond 64 bits)
        return _DATA + _ENCODER.encode(obj).encode() + b"\n\n"


def _through(filters: Sequence[DeltaFilter], text: str) -> tuple[str, SluiceError | None]:
    for f in filters:
        text = f.feed(text)
        if f.blocked is not None:
            return "", f.blocked
    return text, None


async def _finish(filters: Sequence[DeltaFilter]) -> tuple[str, SluiceError | None]:
    """Release what each filter holds, feeding one's tail through the next."""
    text = ""
    for f in filters:
        text = f.feed(text) if text else ""
        settle = getattr(f, "settle", None)
        if settle is not None and f.blocked is None:
            await settle()
        text += f.finish()
        if f.blocked is not None:
            return "", f.blocked
    return text, None


_CONTENT = -1  # the part of a choice that is its content; tool calls are parts 0, 1, …
_HEAD = ("id", "object", "created", "model")
#: Delta values that say nothing.
_SILENT: tuple[Any, ...] = (None, "", [])


class ChunkFilters:
    """The filters of one stream, per choice index and part (content, tool call)."""

    __slots__ = ("_current", "_done", "_filters", "_last", "_make", "blocked")

    def __init__(self, make: Callable[[], list[DeltaFilter]], first: list[DeltaFilter]) -> None:
        self._make = make
        self._filters: dict[tuple[int, int], list[DeltaFilter]] = {(0, _CONTENT): first}
        self._current: dict[int, int] = {}  # choice -> the part being streamed
        self._done: set[int] = set()
        #: The last chunk with choices: its head (id, object, created, model) is the head of
        #: the chunks this writes itself (``_one``), read only when one is written.
        self._last: dict[str, Any] = {"object": "chat.completion.chunk"}
        self.blocked: SluiceError | None = None

    def _of(self, index: int, part: int) -> list[DeltaFilter]:
        got = self._filters.get((index, part))
        if got is None:
            got = self._make()
            if got and part != _CONTENT:
                got.append(JsonTextGuard())
            self._filters[(index, part)] = got
        return got

    async def feed(self, frames: bytes) -> bytes:
        """The frames as the client may see them (stops after a block)."""
        out: list[bytes] = []
        for raw in frames.split(b"\n\n"):
            if not raw:
                continue
            obj = _loads(raw)
            if obj is None:  # never passed unchecked: a frame the checks cannot read ends it
                self._unreadable(out)
                break
            if self._plain(obj):
                chunk = self._content_chunk(obj)
            else:
                before: list[dict[str, Any]] = []
                chunk = await self._chunk(obj, before)
                if before:
                    out.extend(_encode(c) for c in before)
            if chunk is not None:
                out.append(_encode(chunk))
            if self.blocked is not None:
                self._finish_all()
                break
        return b"".join(out)

    def feed_now(self, frames: bytes) -> tuple[bytes, bytes]:
        """``feed`` without a coroutine for the events that need no await (the usual chunk:
        text deltas of texts that go on, a usage chunk): what ``feed`` returns for them, and
        the frames from the first event that ends a text (a ``finish_reason``, a tool call) on,
        for ``await feed`` (a filter may ask an external classifier before it releases the
        end); ``b""`` when there are none or the stream was blocked."""
        out: list[bytes] = []
        events = frames.split(b"\n\n")
        for i, raw in enumerate(events):
            if not raw:
                continue
            obj = _loads(raw)
            if obj is None:
                self._unreadable(out)
                break
            if not self._plain(obj):
                return b"".join(out), b"\n\n".join(events[i:])
            chunk = self._content_chunk(obj)
            if chunk is not None:
                out.append(_encode(chunk))
            if self.blocked is not None:
                self._finish_all()
                break
        return b"".join(out), b""

    def _unreadable(self, out: list[bytes]) -> None:
        self.blocked = GuardrailBlocked("output checks", "output", "an unreadable frame")
        out.append(_encode(self._one(0, {}, "content_filter")))
        self._finish_all()

    async def close(self) -> bytes:
        """At the end of a complete stream: what is still held for choices that never said
        ``finish_reason``."""
        out: list[dict[str, Any]] = []
        for index in sorted({i for i, _ in self._filters}):
            if index in self._done:
                continue
            self._done.add(index)
            part = self._current.get(index, _CONTENT)
            blocked = await self._switch(index, part, None, out)
            if blocked is not None:
                self.blocked = blocked
                out.append(self._one(index, {}, "content_filter"))
                self._finish_all()
                break
        return b"".join(_encode(c) for c in out)

    def _one(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        last = self._last
        head: dict[str, Any] = {k: last[k] for k in _HEAD if k in last}
        head["choices"] = [choice]
        return head

    async def _release(
        self, index: int, part: int, to: int | None
    ) -> tuple[str, SluiceError | None]:
        """Finish the filters of ``part`` of choice ``index``, which moves on to part ``to``
        (None: it ends): what they held, or the block."""
        filters = self._filters.pop((index, part), None)
        if to is not None:
            self._current[index] = to
        return await _finish(filters) if filters else ("", None)

    async def _switch(
        self, index: int, part: int, to: int | None, out: list[dict[str, Any]]
    ) -> SluiceError | None:
        """``_release``, with what was held as a chunk of its own in ``out``."""
        text, blocked = await self._release(index, part, to)
        if text:
            out.append(self._one(index, _delta(part, text), None))
        return blocked

    def _plain(self, obj: dict[str, Any]) -> bool:
        """Whether ``_content_chunk`` handles ``obj``: no text of it ends (no
        ``finish_reason``, no tool call, no switch back to the content)."""
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return True
        current = self._current
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                return False
            delta = choice.get("delta")
            if isinstance(delta, dict) and "tool_calls" in delta:
                return False
            if current:  # a choice moved on to its tool calls: a content delta switches back
                index = choice.get("index", 0)
                if current.get(index if isinstance(index, int) else 0, _CONTENT) != _CONTENT:
                    return False
        return True

    def _content_chunk(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """``_chunk`` for a chunk that is ``_plain``: only content deltas of texts that go on,
        through their filters (no await: nothing is released whole)."""
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return obj  # a usage chunk
        self._last = obj
        kept: list[Any] = []
        for choice in choices:
            if not isinstance(choice, dict):
                kept.append(choice)
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            if index in self._done:
                continue
            filters = self._of(index, _CONTENT)
            if not filters:
                kept.append(choice)  # no stage filters this stream
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                text, blocked = _through(filters, content)
                delta["content"] = text
                if blocked is not None:
                    self._block(index, choice, blocked)
                    kept.append(choice)
                    break
            for v in delta.values():  # (no finish_reason here: ``_plain``)
                if v not in _SILENT:
                    break
            else:
                continue  # nothing left to say in this chunk
            choice["delta"] = delta
            kept.append(choice)
        if not kept and not obj.get("usage"):
            return None
        obj["choices"] = kept
        return obj

    async def _chunk(
        self, obj: dict[str, Any], before: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return obj  # a usage chunk
        self._last = obj
        kept: list[Any] = []
        for choice in choices:
            if not isinstance(choice, dict):
                kept.append(choice)
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            if index in self._done:
                continue
            if not self._of(index, self._current.get(index, _CONTENT)):
                kept.append(choice)  # no stage filters this stream
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            blocked = await self._content(index, delta, before)
            if blocked is None and "tool_calls" in delta:
                blocked = await self._tools(index, delta, before)
            if blocked is None and choice.get("finish_reason"):
                self._done.add(index)
                part = self._current.get(index, _CONTENT)
                tail, blocked = await self._release(index, part, None)
                if tail and part == _CONTENT:
                    delta["content"] = (delta.get("content") or "") + tail
                elif tail:
                    delta["tool_calls"] = [
                        *(delta.get("tool_calls") or ()),
                        *_delta(part, tail)["tool_calls"],
                    ]
            if blocked is not None:
                self._block(index, choice, blocked)
                kept.append(choice)
                break
            if _says_something(choice, delta):
                choice["delta"] = delta
                kept.append(choice)
        if not kept and not obj.get("usage"):
            return None
        obj["choices"] = kept
        return obj

    async def _content(
        self, index: int, delta: dict[str, Any], before: list[dict[str, Any]]
    ) -> SluiceError | None:
        content = delta.get("content")
        if not isinstance(content, str) or not content:
            return None
        part = self._current.get(index, _CONTENT)
        if part != _CONTENT:
            blocked = await self._switch(index, part, _CONTENT, before)
            if blocked is not None:
                return blocked
        text, blocked = _through(self._of(index, _CONTENT), content)
        delta["content"] = text
        return blocked

    async def _tools(
        self, index: int, delta: dict[str, Any], before: list[dict[str, Any]]
    ) -> SluiceError | None:
        calls = delta.get("tool_calls")
        if not isinstance(calls, list):
            return None
        kept: list[Any] = []
        for call in calls:
            if not isinstance(call, dict) or not isinstance(call.get("index"), int):
                kept.append(call)
                continue
            part = call["index"]
            now = self._current.get(index, _CONTENT)
            if now != part:  # the previous text ends: what it held goes right before this call
                tail, blocked = await self._release(index, now, part)
                if blocked is not None:
                    return blocked
                if tail and now == _CONTENT:
                    delta["content"] = (delta.get("content") or "") + tail
                elif tail:
                    kept.append(_delta(now, tail)["tool_calls"][0])
            fn = call.get("function")
            args = fn.get("arguments") if isinstance(fn, dict) else None
            if isinstance(fn, dict) and isinstance(args, str) and args:
                text, blocked = _through(self._of(index, part), args)
                if blocked is not None:
                    return blocked
                if not text and not call.get("id") and not fn.get("name"):
                    continue  # only held arguments: nothing to say yet
                kept.append({**call, "function": {**fn, "arguments": text}})
                continue
            kept.append(call)
        if kept:
            delta["tool_calls"] = kept
        else:
            delta.pop("tool_calls")
        return None

    def _block(self, index: int, choice: dict[str, Any], blocked: SluiceError) -> None:
        self._done.add(index)
        self.blocked = blocked
        choice["delta"] = {}
        choice["finish_reason"] = "content_filter"

    def _finish_all(self) -> None:
        """After a block: every filter finished (its output dropped) so its verdicts count."""
        for filters in self._filters.values():
            for f in filters:
                f.finish()
        self._filters.clear()


def _says_something(choice: dict[str, Any], delta: dict[str, Any]) -> bool:
    """Whether a choice is worth a chunk: it ends, or its delta has a value that says
    something."""
    if choice.get("finish_reason"):
        return True
    return any(v not in _SILENT for v in delta.values())


def _delta(part: int, text: str) -> dict[str, Any]:
    if part == _CONTENT:
        return {"content": text}
    return {"tool_calls": [{"index": part, "function": {"arguments": text}}]}


def _loads(raw: bytes) -> dict[str, Any] | None:
    if not raw.startswith(_DATA):
        return None
    try:
        obj = orjson.loads(memoryview(raw)[len(_DATA) :])
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
