"""The stages' stream filters applied to a canonical stream, chunk by chunk.

Owns ``ChunkFilters``: it reads the ``chat.completion.chunk`` frames of one stream, hands each
choice's text deltas through that choice's ``DeltaFilter``s (in stage order, asked once per
choice), and writes the chunks back with the text the filters released. Text a filter holds back
is released before the choice's ``finish_reason`` (in the same chunk). When a filter blocks,
the choice ends with ``finish_reason: content_filter`` and ``blocked`` is set: the caller ends
the stream there (``[DONE]`` for OpenAI clients). Frames it cannot read pass through unchanged.
Pure: no IO.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import SluiceError
from ..stage import DeltaFilter

_DATA = b"data: "
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _encode(obj: dict[str, Any]) -> bytes:
    return _DATA + _ENCODER.encode(obj).encode() + b"\n\n"


def _through(filters: Sequence[DeltaFilter], text: str) -> tuple[str, SluiceError | None]:
    for f in filters:
        text = f.feed(text)
        if f.blocked is not None:
            return "", f.blocked
    return text, None


def _finish(filters: Sequence[DeltaFilter]) -> tuple[str, SluiceError | None]:
    """Release what each filter holds, feeding one's tail through the next."""
    text = ""
    for f in filters:
        text = (f.feed(text) if text else "") + f.finish()
        if f.blocked is not None:
            return "", f.blocked
    return text, None


class ChunkFilters:
    """The filters of one stream, per choice index."""

    __slots__ = ("_done", "_filters", "_head", "_make", "blocked")

    def __init__(self, make: Callable[[], list[DeltaFilter]], first: list[DeltaFilter]) -> None:
        self._make = make
        self._filters: dict[int, list[DeltaFilter]] = {0: first}
        self._done: set[int] = set()
        self._head: dict[str, Any] = {"object": "chat.completion.chunk"}
        self.blocked: SluiceError | None = None

    def _of(self, index: int) -> list[DeltaFilter]:
        got = self._filters.get(index)
        if got is None:
            got = self._filters[index] = self._make()
        return got

    def feed(self, frames: bytes) -> bytes:
        """The frames as the client may see them (stops after a block)."""
        out: list[bytes] = []
        for raw in frames.split(b"\n\n"):
            if not raw:
                continue
            obj = _loads(raw)
            if obj is None:
                out.append(raw + b"\n\n")
                continue
            chunk = self._chunk(obj)
            if chunk is not None:
                out.append(_encode(chunk))
            if self.blocked is not None:
                break
        return b"".join(out)

    def close(self) -> bytes:
        """At the end of a complete stream: what is still held for choices that never said
        ``finish_reason``."""
        out: list[bytes] = []
        for index, filters in self._filters.items():
            if index in self._done or not filters:
                continue
            self._done.add(index)
            text, blocked = _finish(filters)
            if blocked is not None:
                self.blocked = blocked
                out.append(_encode(self._one(index, {}, "content_filter")))
                break
            if text:
                out.append(_encode(self._one(index, {"content": text}, None)))
        return b"".join(out)

    def _one(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        return {**self._head, "choices": [choice]}

    def _chunk(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return obj  # a usage chunk
        self._head = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
        kept: list[Any] = []
        for choice in choices:
            if not isinstance(choice, dict):
                kept.append(choice)
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            if index in self._done:
                continue
            filters = self._of(index)
            if not filters:
                kept.append(choice)
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                text, blocked = _through(filters, content)
                if blocked is not None:
                    self._block(index, choice, blocked)
                    kept.append(choice)
                    break
                delta["content"] = text
            if choice.get("finish_reason"):
                self._done.add(index)
                tail, blocked = _finish(filters)
                if blocked is not None:
                    self._block(index, choice, blocked)
                    kept.append(choice)
                    break
                if tail:
                    delta["content"] = (delta.get("content") or "") + tail
            if not choice.get("finish_reason") and not any(
                v not in (None, "") for v in delta.values()
            ):
                continue  # nothing left to say in this chunk
            choice["delta"] = delta
            kept.append(choice)
        if not kept and not obj.get("usage"):
            return None
        obj["choices"] = kept
        return obj

    def _block(self, index: int, choice: dict[str, Any], blocked: SluiceError) -> None:
        self._done.add(index)
        self.blocked = blocked
        choice["delta"] = {}
        choice["finish_reason"] = "content_filter"


def _loads(raw: bytes) -> dict[str, Any] | None:
    if not raw.startswith(_DATA):
        return None
    try:
        obj = json.loads(raw[len(_DATA) :])
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
