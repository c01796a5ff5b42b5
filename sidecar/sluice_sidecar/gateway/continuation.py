"""Resuming a stream that failed after its commit point (``streaming.midStreamFailure: Continue``).

Owns three pure pieces; the request path (``stream``) does the IO and asks ``routing`` where to go:

* ``Transcript`` reads the canonical OpenAI chunks the client was sent and keeps what a resumption
  needs: the text of the answer so far, how many content chunks it took, the first chunk's
  ``id``/``created``/``model``, and whether the answer can be resumed at all (one choice, text
  only: a half-sent tool call or a second choice cannot be continued, and an answer that already
  carried its ``finish_reason`` has nothing left to continue).
* ``resume_body`` builds the request for the next backend: the partial answer as an assistant
  prefill. Anthropic continues a trailing assistant message (a true prefill; trailing whitespace
  is trimmed, as Anthropic requires); OpenAI-style providers get the partial answer as an
  assistant message and a user message asking to continue. ``max_tokens`` is what is left of the
  original cap.
* ``Splicer`` rewrites the continuation's chunks so the client sees one answer: no second
  ``role``, the first stream's ``id``/``created``/``model``, no doubled whitespace at the seam,
  and a usage chunk that covers both tries.

Only the OpenAI client API is resumed (a ``/v1/messages`` stream ends with its error event).
"""

from __future__ import annotations

import json
from typing import Any

from ..contract import Provider
from ..model import Usage

#: What an OpenAI-style backend is asked after the partial answer.
CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped: do not repeat "
    "anything already written and do not add any preamble."
)
_DATA = b"data: "


def _events(frame: bytes) -> list[dict[str, Any]]:
    """The JSON objects of the ``data:`` events of a canonical frame batch."""
    out = []
    for raw in frame.split(b"\n\n"):
        if not raw.startswith(_DATA):
            continue
        try:
            obj = json.loads(raw[len(_DATA) :])
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _encode(obj: dict[str, Any]) -> bytes:
    return _DATA + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class Transcript:
    """What the client has been sent so far, as far as resuming it is concerned."""

    __slots__ = ("_text", "chunks", "created", "id", "model", "resumable")

    def __init__(self) -> None:
        self._text: list[str] = []
        #: Chunks that carried content (the output tokens already produced, estimated).
        self.chunks = 0
        self.id: str | None = None
        self.created: int | None = None
        self.model: str | None = None
        self.resumable = True

    @property
    def text(self) -> str:
        return "".join(self._text)

    def feed(self, frame: bytes) -> None:
        for obj in _events(frame):
            if self.id is None and isinstance(obj.get("id"), str) and obj["id"]:
                self.id = obj["id"]
                self.created = obj.get("created") if isinstance(obj.get("created"), int) else None
                self.model = obj.get("model") if isinstance(obj.get("model"), str) else None
            for choice in obj.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                if choice.get("index", 0) != 0 or choice.get("finish_reason"):
                    self.resumable = False
                delta = choice.get("delta")
                if not isinstance(delta, dict):
                    continue
                if delta.get("tool_calls") or delta.get("function_call") or delta.get("refusal"):
                    self.resumable = False
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._text.append(content)
                    self.chunks += 1


def resume_body(
    body: dict[str, Any], partial: str, provider: Provider, produced: int, cap: int
) -> dict[str, Any]:
    """The canonical chat body that asks ``provider`` to continue ``partial``. Pure.

    ``produced`` output tokens (content chunks) were already sent out of ``cap``; the
    continuation may use the rest (at least one).
    """
    messages = list(body.get("messages") or ())
    if provider is Provider.ANTHROPIC:
        prefill = partial.rstrip()
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
    elif partial:
        messages.append({"role": "assistant", "content": partial})
        messages.append({"role": "user", "content": CONTINUE_PROMPT})
    out = dict(body)
    out["messages"] = messages
    remaining = max(1, cap - produced)
    if out.get("max_completion_tokens") is not None or (
        provider is Provider.OPENAI and out.get("max_tokens") is None
    ):
        out["max_completion_tokens"] = remaining
        out.pop("max_tokens", None)
    else:
        out["max_tokens"] = remaining
    return out


class Splicer:
    """Rewrites the chunks of a continuation to extend the stream the client already has."""

    __slots__ = ("_before", "_created", "_id", "_model", "_trim")

    def __init__(self, transcript: Transcript, before: Usage) -> None:
        self._id = transcript.id
        self._created = transcript.created
        self._model = transcript.model
        self._before = before
        #: The client's text ends in whitespace: drop the whitespace the continuation opens with.
        self._trim = transcript.text[-1:].isspace()

    def rewrite(self, frame: bytes) -> bytes:
        """The frame as the client should see it (``b""`` when nothing is left of it)."""
        out = []
        for obj in _events(frame):
            chunk = self._chunk(obj)
            if chunk is not None:
                out.append(_encode(chunk))
        return b"".join(out)

    def _chunk(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        if self._id is not None:
            obj["id"] = self._id
        if self._created is not None:
            obj["created"] = self._created
        if self._model is not None:
            obj["model"] = self._model
        usage = obj.get("usage")
        if isinstance(usage, dict):
            obj["usage"] = self._with_earlier(usage)
        choices = [c for c in obj.get("choices") or () if self._keep(c)]
        if not choices and not isinstance(usage, dict):
            return None
        obj["choices"] = choices
        return obj

    def _keep(self, choice: Any) -> bool:
        if not isinstance(choice, dict):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict):
            delta.pop("role", None)
            content = delta.get("content")
            if self._trim and isinstance(content, str) and content:
                content = content.lstrip()
                if content:
                    self._trim = False
                    delta["content"] = content
                else:
                    del delta["content"]
            if not any(v not in (None, "") for v in delta.values()):
                delta.clear()
        return bool(delta) or bool(choice.get("finish_reason"))

    def _with_earlier(self, usage: dict[str, Any]) -> dict[str, Any]:
        """Usage of both tries: the client asked for what its request cost."""
        before = self._before
        out = dict(usage)
        prompt = out.get("prompt_tokens")
        completion = out.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            out["prompt_tokens"] = prompt + before.input_tokens
            out["completion_tokens"] = completion + before.output_tokens
            out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
        return out
