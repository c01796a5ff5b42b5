"""The ``openai_gemini`` translator: OpenAI chat requests to Gemini's ``generateContent`` /
``streamGenerateContent``, and its answers back. Pure: no IO.

Owns the translation between the OpenAI chat format and Gemini's (``DIALECT`` is the backend half
the request path uses):

* request (``POST {base}/v1beta/models/{model}:generateContent``, or
  ``:streamGenerateContent?alt=sse``; key in ``x-goog-api-key``): system/developer messages →
  ``systemInstruction``; ``assistant`` → role ``model``; text, images (``data:`` URLs →
  ``inlineData``, http(s) → ``fileData``), audio and files → parts; ``tool_calls`` →
  ``functionCall`` parts; ``tool`` messages → ``functionResponse`` parts (named after the call
  they answer; a JSON object result is passed as the response, anything else as
  ``{"result": …}``); consecutive turns of one role merged; ``tools`` →
  ``functionDeclarations`` with the JSON Schema as ``parametersJsonSchema``; ``tool_choice`` →
  ``toolConfig.functionCallingConfig``; ``temperature``, ``top_p``, ``max_tokens``, ``stop``,
  ``n``, penalties, ``seed``, ``top_k`` and ``response_format`` → ``generationConfig``; any
  other field is a 400 naming it (``FIELDS``).
* answer: text parts (not thoughts) → ``content``; ``functionCall`` → ``tool_calls`` (short
  ids valid for every provider; the ``thoughtSignature`` is kept in the sidecar's
  ``signatures.SignatureStore`` under that id and handed back on the next turn, as Gemini
  requires); ``finishReason`` → ``finish_reason`` (safety, recitation, blocklist,
  prohibited content, SPII → ``content_filter``; STOP with a function call → ``tool_calls``);
  ``usageMetadata`` → usage (thought tokens count as output, ``cachedContentTokenCount`` as
  cached input). A prompt blocked by ``promptFeedback.blockReason`` is a 400 ``content_filter``
  failure, so a route can fall over on ``contentFilter``.
* stream: every SSE event is a partial ``GenerateContentResponse``; the stream ends at EOF
  (there is no ``[DONE]``) and is complete once a ``finishReason`` came; each choice's
  ``finish_reason`` (the last one Gemini gave) and the usage chunk are written at the end.
* errors: ``normalise_error`` maps Gemini's errors (an invalid API key is a 400 there; here a
  401, like every provider's) to OpenAI's vocabulary.

"""

from __future__ import annotations

import json
import mimetypes
import re
from typing import Any
from urllib.parse import quote

from .. import errors, sse
from ..model import Operation, Usage
from . import chat
from .base import (
    Answer,
    Call,
    EventStream,
    Normalised,
    dumps,
    incomplete,
    loads_event,
    refuse_unknown,
)
from .signatures import SignatureStore, portable, short_id

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}
SIGNATURE_SEPARATOR = "~"
#: How each canonical (OpenAI chat) request field reaches Gemini; anything else is a 400.
FIELDS = {
    "model": "translated: the URL's model",
    "messages": "translated: contents, systemInstruction",
    "stream": "translated: streamGenerateContent?alt=sse",
    "stream_options": "translated: usage is always reported",
    "max_tokens": "translated: generationConfig.maxOutputTokens",
    "max_completion_tokens": "translated: generationConfig.maxOutputTokens",
    "temperature": "translated: generationConfig.temperature",
    "top_p": "translated: generationConfig.topP",
    "top_k": "translated: generationConfig.topK",
    "n": "translated: generationConfig.candidateCount",
    "stop": "translated: generationConfig.stopSequences",
    "presence_penalty": "translated: generationConfig.presencePenalty",
    "frequency_penalty": "translated: generationConfig.frequencyPenalty",
    "seed": "translated: generationConfig.seed",
    "response_format": "translated: responseMimeType + responseJsonSchema",
    "tools": "translated: functionDeclarations",
    "tool_choice": "translated: toolConfig.functionCallingConfig",
    "parallel_tool_calls": "refused unless true: Gemini has no switch for it",
    "logprobs": "refused: log probabilities are not translated back",
    "top_logprobs": "refused: log probabilities are not translated back",
    "logit_bias": "refused: Gemini has no logit bias",
    "user": "refused: Gemini has no end-user field",
    "metadata": "refused: Gemini has no request metadata",
    "store": "refused: Sluice and Gemini do not store completions",
    "reasoning_effort": "refused: not translated to thinkingConfig",
    "service_tier": "refused: OpenAI only",
}
_VERSIONED = re.compile(r"/v1(alpha|beta)?\d*$")


# --- request --------------------------------------------------------------------------------


def url_of(base_url: str | None, model: str, stream: bool) -> str:
    base = (base_url or DEFAULT_BASE_URL).rstrip("/")
    if not _VERSIONED.search(base):
        base += "/v1beta"
    model = quote(model.removeprefix("models/"), safe="-._")
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{base}/models/{model}:{method}"


def build_request(call: Call) -> tuple[str, bytes, dict[str, str]]:
    """(url, body, headers) for ``call``; 400 for a field Gemini cannot honour. A purely
    computational function."""
    refuse_unknown(call.body, FIELDS, call)
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if call.stream else "application/json",
        "X-Request-Id": call.request_id,
    }
    if call.api_key:
        headers["x-goog-api-key"] = call.api_key
    url = url_of(call.backend.base_url, call.backend.model, call.stream)
    payload = to_generate_request(call.body, call.default_max_tokens, call.signatures)
    return url, dumps(payload), headers


def to_generate_request(
    body: dict[str, Any], default_max_tokens: int = 0, signatures: SignatureStore | None = None
) -> dict[str, Any]:
    """A Gemini ``generateContent`` request for an OpenAI chat request (``maxOutputTokens`` is
    ``default_max_tokens`` when the request has no cap and it is positive; the thought signature
    of a tool call is looked up in ``signatures`` by its id). A pure function."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, m in enumerate(body.get("messages") or ()):
        path = f"messages[{i}]"
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            system += _parts(content, path + ".content")
        elif role == "user":
            _append(contents, "user", _parts(content, path + ".content"))
        elif role == "assistant":
            parts = _parts(content, path + ".content")
            for j, tc in enumerate(m.get("tool_calls") or ()):
                fn = tc.get("function") or {}
                call_id = str(tc.get("id", ""))
                names[call_id] = str(fn.get("name"))
                args = chat.json_arguments(
                    fn.get("arguments"), f"{path}.tool_calls[{j}].function.arguments"
                )
                part: dict[str, Any] = {"functionCall": {"name": fn.get("name"), "args": args}}
                signature = signatures.get(call_id) if signatures is not None else None
                if signature is None:  # an id from before short ids: ``id~signature``
                    _, _, signature = call_id.partition(SIGNATURE_SEPARATOR)
                if signature:
                    part["thoughtSignature"] = signature
                parts.append(part)
            _append(contents, "model", parts)
        elif role in ("tool", "function"):
            call_id = str(m.get("tool_call_id", ""))
            name = names.get(call_id) or m.get("name") or call_id
            response = {"name": name, "response": _function_response(content)}
            _append(contents, "user", [{"functionResponse": response}])
        else:
            raise errors.InvalidField(path + ".role", f"unknown role {role!r}")
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    config = _generation_config(body, default_max_tokens)
    if config:
        out["generationConfig"] = config
    tools = body.get("tools")
    if tools:
        out["tools"] = [{"functionDeclarations": [_declaration(t) for t in tools]}]
    tool_config = _tool_config(body.get("tool_choice"))
    if tool_config is not None:
        out["toolConfig"] = tool_config
    return out


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _parts(content: Any, path: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        ppath = f"{path}[{k}]"
        if not isinstance(part, dict):
            raise errors.InvalidField(ppath, "expected an object")
        kind = part.get("type")
        if kind == "text":
            out.append({"text": part.get("text", "")})
        elif kind == "image_url":
            url = chat.image_url_of(part)
            if url is None:
                raise errors.InvalidField(ppath, "an image_url part needs a url")
            if url.startswith(("http://", "https://")):
                mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
                out.append({"fileData": {"mimeType": mime, "fileUri": url}})
            else:
                mime, data = chat.data_url(url, ppath + ".image_url.url")
                out.append({"inlineData": {"mimeType": mime, "data": data}})
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = f"audio/{audio.get('format', 'wav')}"
            out.append({"inlineData": {"mimeType": mime, "data": audio.get("data", "")}})
        elif kind == "file":
            f = part.get("file") or {}
            mime, data = chat.data_url(str(f.get("file_data", "")), ppath + ".file.file_data")
            out.append({"inlineData": {"mimeType": mime, "data": data}})
        else:
            raise errors.InvalidField(ppath, f"{kind!r} content cannot be sent to Gemini")
    return out


def _function_response(content: Any) -> dict[str, Any]:
    text = chat.text_of(content)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = text
    return value if isinstance(value, dict) else {"result": value}


def _generation_config(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
        ("top_k", "topK"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int):
        config["maxOutputTokens"] = max_tokens
    elif default_max_tokens > 0:
        config["maxOutputTokens"] = default_max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (rf.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    return config


def _declaration(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out: dict[str, Any] = {"name": fn.get("name"), "description": fn.get("description") or ""}
    if fn.get("parameters"):
        out["parametersJsonSchema"] = fn["parameters"]
    return out


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        mode: dict[str, Any] = {"mode": "AUTO"}
    elif choice == "required":
        mode = {"mode": "ANY"}
    elif choice == "none":
        mode = {"mode": "NONE"}
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        mode = {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    else:
        return None
    return {"functionCallingConfig": mode}


# --- answer ---------------------------------------------------------------------------------


def usage_of(u: Any) -> Usage | None:
    """Usage from ``usageMetadata`` (prompt tokens include cached ones; thoughts are output)."""
    if not isinstance(u, dict) or not isinstance(u.get("promptTokenCount"), int):
        return None
    output = (u.get("candidatesTokenCount") or 0) + (u.get("thoughtsTokenCount") or 0)
    return Usage(u["promptTokenCount"], output, u.get("cachedContentTokenCount") or 0)


def blocked(obj: dict[str, Any], backend: str) -> errors.UpstreamStatusError | None:
    """The failure for a prompt Gemini refused (``promptFeedback.blockReason``), if it did."""
    feedback = obj.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if not reason or obj.get("candidates"):
        return None
    return errors.UpstreamStatusError(
        400,
        f"Backend '{backend}': the prompt was blocked by the provider's content policy "
        f"({errors.sanitise(str(reason))}).",
        backend=backend,
        upstream_code="content_filter",
    )


def in_band_error(obj: dict[str, Any], backend: str) -> errors.UpstreamError | None:
    err = obj.get("error")
    if not isinstance(err, dict):
        return blocked(obj, backend)
    code = err.get("code")
    status = code if isinstance(code, int) else 500
    message = str(err.get("message") or err.get("status") or "unknown error")
    status, ocode, _ = normalise_error(status, None, str(err.get("status") or ""), message)
    out = errors.UpstreamStreamError(
        f"Backend '{backend}' reported an error: {errors.sanitise(message)}", backend=backend
    )
    out.failure = errors.classify_status(status, ocode, message)
    if out.failure is None:
        out.counts_for_breaker = False
    return out


def _call_id(
    fc: dict[str, Any], part: dict[str, Any], prefix: str, n: int, store: SignatureStore | None
) -> str:
    """The id clients see for a function call: short and valid for every provider; its thought
    signature is kept in ``store`` under it."""
    base = str(fc.get("id") or f"call_{prefix}_{n}")
    signature = part.get("thoughtSignature")
    if signature:
        out = short_id(f"{base}\0{signature}")
        if store is not None:
            store.put(out, str(signature))
        return out
    return base if portable(base) else short_id(base)


def _finish(reason: Any, has_calls: bool) -> str:
    out = FINISH_REASONS.get(str(reason), "stop")
    return "tool_calls" if out == "stop" and has_calls else out


def to_chat_completion(
    obj: dict[str, Any],
    created: int,
    model: str,
    backend: str,
    store: SignatureStore | None = None,
) -> tuple[dict[str, Any], Usage | None]:
    """(OpenAI chat completion, usage) for a ``GenerateContentResponse``. A pure function;
    raises the content-filter failure for a blocked prompt."""
    failure = blocked(obj, backend)
    if failure is not None:
        raise failure
    rid = str(obj.get("responseId") or "gemini")
    choices = []
    for k, cand in enumerate(obj.get("candidates") or ()):
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in (cand.get("content") or {}).get("parts") or ():
            if "text" in part and not part.get("thought"):
                texts.append(str(part["text"]))
            elif isinstance(part.get("functionCall"), dict):
                fc = part["functionCall"]
                args = json.dumps(fc.get("args") or {}, ensure_ascii=False)
                cid = _call_id(fc, part, rid, len(calls), store)
                calls.append(chat.tool_call(cid, str(fc.get("name")), args))
        choices.append(
            {
                "index": cand.get("index", k),
                "message": chat.message("".join(texts) if texts else None, calls),
                "finish_reason": _finish(cand.get("finishReason"), bool(calls)),
                "logprobs": None,
            }
        )
    usage = usage_of(obj.get("usageMetadata"))
    body = chat.completion(rid, created, str(obj.get("modelVersion") or model), choices, usage)
    return body, usage


def normalise_error(
    status: int, code: str | None, etype: str | None, message: str
) -> tuple[int, str | None, str | None]:
    """Gemini's error answer in OpenAI's vocabulary (``BackendDialect.normalise_error``)."""
    text = message.lower()
    if "api key not valid" in text or "api_key_invalid" in text:
        return 401, "invalid_api_key", "invalid_request_error"
    if ("token count" in text and "exceeds" in text) or "context window" in text:
        return status, "context_length_exceeded", "invalid_request_error"
    if status == 429:
        return status, "rate_limit_exceeded", "rate_limit_exceeded"
    if status == 403:
        return status, "permission_denied", "invalid_request_error"
    if status == 404:
        return status, "model_not_found", "invalid_request_error"
    return status, None if code == str(status) else code, None


class StreamTranslator(EventStream):
    """Gemini stream events (partial ``GenerateContentResponse``s) → OpenAI chunk frames.

    A choice's ``finish_reason`` is written once, at the end of the stream (Gemini's stream ends
    at EOF): older Gemini models put ``STOP`` on every event and a recitation stop after them,
    and OpenAI clients take the first finish reason as the last word. The last reason given
    wins."""

    def __init__(
        self,
        backend: str,
        created: int,
        model: str,
        wants_usage: bool,
        store: SignatureStore | None = None,
    ) -> None:
        super().__init__(backend)
        self._store = store
        self.created = created
        self.model = model
        self.wants_usage = wants_usage
        self.usage: Usage | None = None
        self.complete = False
        self.content_chunks = 0
        self._w: chat.ChunkWriter | None = None
        self._rid = "gemini"
        self._calls: dict[int, int] = {}
        self._open: set[int] = set()
        self._reasons: dict[int, str] = {}

    def event(self, ev: sse.Event) -> list[bytes]:
        obj = loads_event(ev, self.backend)
        failure = in_band_error(obj, self.backend)
        if failure is not None:
            raise failure
        if self._w is None:
            self._rid = str(obj.get("responseId") or "gemini")
            model = str(obj.get("modelVersion") or self.model)
            self._w = chat.ChunkWriter(self._rid, self.created, model)
        w = self._w
        usage = usage_of(obj.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        out: list[bytes] = []
        for k, cand in enumerate(obj.get("candidates") or ()):
            index = cand.get("index", k)
            if index not in self._reasons:
                self._open.add(index)
            for part in (cand.get("content") or {}).get("parts") or ():
                if "text" in part and not part.get("thought"):
                    if part["text"]:
                        self.content_chunks += 1
                        out.append(w.text(str(part["text"]), index))
                elif isinstance(part.get("functionCall"), dict):
                    fc = part["functionCall"]
                    n = self._calls[index] = self._calls.get(index, -1) + 1
                    tc = {
                        "index": n,
                        "id": _call_id(fc, part, self._rid, n, self._store),
                        "type": "function",
                        "function": {
                            "name": fc.get("name"),
                            "arguments": json.dumps(fc.get("args") or {}, ensure_ascii=False),
                        },
                    }
                    self.content_chunks += 1
                    out.append(w.delta({"tool_calls": [tc]}, index))
            reason = cand.get("finishReason")
            if reason:
                self._open.discard(index)
                self._reasons[index] = str(reason)
        self.complete = bool(self._reasons) and not self._open
        return out

    def tail(self) -> list[bytes]:
        if not self.complete or self._w is None:
            raise incomplete(self.backend)
        w = self._w
        out = [w.finish(_finish(r, i in self._calls), i) for i, r in sorted(self._reasons.items())]
        if self.wants_usage and self.usage is not None:
            out.append(w.usage(self.usage))
        return out


class GeminiDialect:
    """The backend half of ``openai_gemini``."""

    name = "gemini"
    operations: frozenset[Operation] = frozenset({"chat"})

    def request(self, call: Call) -> tuple[str, bytes, dict[str, str]]:
        return build_request(call)

    def normalise_error(
        self, status: int, code: str | None, etype: str | None, message: str
    ) -> Normalised:
        return normalise_error(status, code, etype, message)

    def answer(self, call: Call, raw: bytes, obj: dict[str, Any], created: int) -> Answer:
        backend = call.backend.name
        failure = in_band_error(obj, backend)
        if failure is not None:
            raise failure
        body, usage = to_chat_completion(obj, created, call.backend.model, backend, call.signatures)
        return Answer(json.dumps(body, separators=(",", ":")).encode(), usage)

    def stream(self, call: Call, created: int) -> StreamTranslator:
        return StreamTranslator(
            call.backend.name,
            created,
            call.backend.model,
            call.client_wants_usage,
            call.signatures,
        )


DIALECT = GeminiDialect()
