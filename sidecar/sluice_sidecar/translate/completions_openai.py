"""The ``completions_openai`` and ``completions_mistral`` translators: text completions clients
(``POST /v1/completions``: fill-in-the-middle and autocomplete clients on vLLM, Ollama,
llama.cpp, OpenAI's instruct models) to ``openai`` and ``openai-compatible`` backends, and to
Mistral's FIM API.

Owns both halves, explicitly:

* the backend half for OpenAI-style servers (``DIALECT``) is a pass-through of the client's
  body to ``{baseURL}/completions`` with the backend's model name, ``max_tokens`` (a
  ``max_completion_tokens`` the budget imposed is sent as ``max_tokens``, the only cap this API
  has; ``limits.defaultMaxTokens`` when there is none) and ``stream_options.include_usage`` on
  streams;
* Mistral has no ``/v1/completions``: ``MISTRAL`` sends ``prompt``/``suffix`` to
  ``{baseURL}/fim/completions`` (``seed`` as ``random_seed``); what FIM cannot take is a 400
  naming the field (``MISTRAL_FIELDS``). Its answers are chat completions already;
* answers are shown to the request path in the canonical shape — a ``text_completion`` becomes
  a ``chat.completion`` whose message content is the choice's ``text`` (every other field of the
  choice kept), a streamed one ``chat.completion.chunk`` frames with ``delta.content`` — so the
  stages' stream filters check the generated text like any chat answer; the client half
  (``RESHAPE``) turns them back into ``text_completion`` objects and chunks.

``API`` is the client API (OpenAI's errors and ``[DONE]``). Pure: no IO.
"""

from __future__ import annotations

from typing import Any

from .. import errors, sse, validate
from ..contract import Provider
from ..model import Operation
from . import openai_openai
from .base import (
    Answer,
    BackendDialect,
    Call,
    EventStream,
    Normalised,
    StreamDecoder,
    dumps,
    loads_event,
    loads_json,
    refuse_unknown,
)
from .openai_openai import (
    DEFAULT_BASE_URLS,
    OpenAIAPI,
    OpenAIStream,
    bearer_headers,
)

_OPS: frozenset[Operation] = frozenset({"completions"})


def _base(call: Call) -> str:
    backend = call.backend
    return (backend.base_url or DEFAULT_BASE_URLS.get(backend.provider, "")).rstrip("/")


def _cap(body: dict[str, Any], call: Call) -> None:
    """``max_tokens`` set: the client's, else an imposed ``max_completion_tokens``, else the
    default cap."""
    imposed = body.pop("max_completion_tokens", None)
    if body.get("max_tokens") is None:
        body["max_tokens"] = imposed or call.default_max_tokens


# --- canonical shapes ---------------------------------------------------------------------------


def _choices(obj: dict[str, Any], old: str, new: str, to: Any) -> list[Any] | None:
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return None
    out: list[Any] = []
    for ch in choices:
        if not isinstance(ch, dict):
            out.append(ch)
            continue
        moved = {k: v for k, v in ch.items() if k != old}
        moved[new] = to(ch.get(old))
        out.append(moved)
    return out


def _message(text: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text if isinstance(text, str) else ""}


def _delta(text: Any) -> dict[str, Any]:
    return {"content": text} if isinstance(text, str) and text else {}


def _text_of_message(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def _text_of_delta(delta: Any) -> str:
    return _text_of_message(delta)


def to_chat(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """A ``text_completion`` (``kind``: ``chat.completion`` or ``chat.completion.chunk``) in
    the canonical shape: each choice's ``text`` as its message (or delta) content."""
    chunk = kind == "chat.completion.chunk"
    choices = _choices(obj, "text", "delta" if chunk else "message", _delta if chunk else _message)
    out = {**obj, "object": kind}
    if choices is not None:
        out["choices"] = choices
    return out


def from_chat(obj: dict[str, Any]) -> dict[str, Any]:
    """A canonical chat completion (or chunk) back as a ``text_completion``."""
    chunk = obj.get("object") == "chat.completion.chunk"
    choices = _choices(
        obj, "delta" if chunk else "message", "text", _text_of_delta if chunk else _text_of_message
    )
    out = {**obj, "object": "text_completion"}
    if choices is not None:
        for ch in choices:
            if isinstance(ch, dict):
                ch.setdefault("logprobs", None)
                ch.setdefault("finish_reason", None)
        out["choices"] = choices
    return out


# --- the backend half: OpenAI-style servers -----------------------------------------------------


class CompletionsStream(OpenAIStream):
    """A ``text_completion`` stream as canonical chunk frames, metered on the way (as the chunks
    of a chat stream are)."""

    def feed(self, chunk: bytes, out: list[bytes]) -> None:
        EventStream.feed(self, chunk, out)  # every event is rewritten: no fast path

    def event(self, ev: sse.Event) -> list[bytes]:
        if ev.data.strip() == "[DONE]":
            self.complete = self.finished = True
            return []
        obj = to_chat(loads_event(ev, self.backend), "chat.completion.chunk")
        return [self._encoded(obj)] if self._check(obj) else []


class CompletionsDialect:
    """The backend half of ``completions_openai``: the body goes on as it is (model, cap and
    ``stream_options`` set); answers come back in the canonical shape."""

    name = "openai-completions"
    operations = _OPS

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        body = dict(call.body)
        body["model"] = call.backend.model
        _cap(body, call)
        if call.stream:
            so = body.get("stream_options")
            so = dict(so) if isinstance(so, dict) else {}
            so["include_usage"] = True
            body["stream_options"] = so
        return _base(call) + "/completions", dumps(body), bearer_headers(call)

    def normalise_error(
        self, status: int, code: str | None, etype: str | None, message: str
    ) -> Normalised:
        return status, code, etype

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        usage = openai_openai.DIALECT.answer(call, raw, obj, created).usage  # raises in-band errors
        return Answer(dumps(to_chat(obj, "chat.completion")), usage)

    def stream(self, call: Call, created: int) -> StreamDecoder:
        return CompletionsStream(call)


DIALECT = CompletionsDialect()


# --- the backend half: Mistral's FIM API --------------------------------------------------------

#: How each text completions field reaches Mistral's ``/v1/fim/completions``.
MISTRAL_FIELDS: dict[str, str] = {
    "model": "the backend's model",
    "prompt": "passed (a string; an array is refused: FIM takes one prompt)",
    "suffix": "passed",
    "max_tokens": "passed",
    "max_completion_tokens": "as max_tokens",
    "temperature": "passed",
    "top_p": "passed",
    "stop": "passed",
    "seed": "as random_seed",
    "stream": "passed",
    "stream_options": "dropped: Mistral reports usage on the last chunk",
    "n": "refused: FIM answers one choice",
    "best_of": "refused: FIM answers one choice",
    "echo": "refused: FIM cannot echo the prompt",
    "logprobs": "refused: FIM has no log probabilities",
    "presence_penalty": "refused: FIM has no penalties",
    "frequency_penalty": "refused: FIM has no penalties",
    "logit_bias": "refused: FIM has no logit bias",
    "user": "refused: FIM has no user field",
}
_FIM_NO_OP = {"echo": (False,), "best_of": (1,)}


class MistralFIM(CompletionsDialect):
    """The backend half of ``completions_mistral``: answers are chat completions already."""

    name = "mistral-fim"
    operations = _OPS

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        src = {k: v for k, v in call.body.items() if _FIM_NO_OP.get(k, ()) != (v,)}
        refuse_unknown(src, MISTRAL_FIELDS, call)
        if not isinstance(src.get("prompt"), str):
            raise errors.InvalidField(
                "prompt",
                f"backend '{call.backend.name}' (mistral) takes one prompt string (FIM); send a "
                "string or route this request to an openai-compatible backend",
            )
        body: dict[str, Any] = {"model": call.backend.model}
        for name in ("prompt", "suffix", "max_tokens", "temperature", "top_p", "stop", "stream"):
            if src.get(name) is not None:
                body[name] = src[name]
        if src.get("max_completion_tokens") is not None:
            body["max_completion_tokens"] = src["max_completion_tokens"]
        _cap(body, call)
        if src.get("seed") is not None:
            body["random_seed"] = src["seed"]
        return _base(call) + "/fim/completions", dumps(body), bearer_headers(call)

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        return openai_openai.DIALECT.answer(call, raw, obj, created)

    def stream(self, call: Call, created: int) -> StreamDecoder:
        return openai_openai.DIALECT.stream(call, created)


MISTRAL = MistralFIM()


# --- the client half ----------------------------------------------------------------------------


class _StreamReshape:
    """Canonical chunk frames → ``text_completion`` chunk frames."""

    def feed(self, frames: bytes) -> bytes:
        out: list[bytes] = []
        for raw in frames.split(b"\n\n"):
            if not raw:
                continue
            obj = loads_json(raw[6:]) if raw.startswith(b"data: ") else None
            if isinstance(obj, dict) and obj.get("object") == "chat.completion.chunk":
                out.append(sse.encode_data(dumps(from_chat(obj))))
            else:
                out.append(raw + b"\n\n")
        return b"".join(out)

    def end(self) -> bytes:
        return b""


class Reshape:
    """The client half of the completions pairs."""

    def answer(self, body: bytes) -> bytes:
        obj = loads_json(body)
        return dumps(from_chat(obj)) if isinstance(obj, dict) else body

    def stream(self) -> _StreamReshape:
        return _StreamReshape()


RESHAPE = Reshape()


class CompletionsAPI(OpenAIAPI):
    """Text completions as a client API: OpenAI's errors and ``[DONE]``."""

    name = "completions"

    def parse(self, obj: dict[str, Any], operation: Operation) -> tuple[str, dict[str, Any]]:
        return validate.completions(obj), obj

    def length_stop(self, output_tokens: int, chunk: tuple[str, int, str, int]) -> bytes:
        id_, created, model, choices = chunk
        obj = {
            "id": id_,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": i, "text": "", "logprobs": None, "finish_reason": "length"}
                for i in range(max(1, choices))
            ],
        }
        return sse.encode_data(dumps(obj))


API = CompletionsAPI()

#: The providers a text completions client can be served by, and their backend halves.
BACKENDS: dict[Provider, BackendDialect] = {
    Provider.OPENAI: DIALECT,
    Provider.OPENAI_COMPATIBLE: DIALECT,
    Provider.MISTRAL: MISTRAL,
}
