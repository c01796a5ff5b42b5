"""Every error the sidecar can answer with, and how each becomes an HTTP status and an OpenAI body.

Owns the exception tree and the single mapping from exception to status, headers and body. Pure:
no IO. Transport exceptions (aiohttp, OSError, timeouts) are translated into this tree at the edge
(``upstream``), never here; the stages raise ``BudgetExceeded`` and ``GuardrailBlocked``.

    SluiceError                     status, type, code, param, message
    ├── RequestError                the client's request is wrong; never sent upstream
    │   ├── InvalidJSON             400 invalid_request_error / invalid_json
    │   ├── InvalidField            400 invalid_request_error / invalid_value, param = field path
    │   ├── ContextLengthExceeded   400 invalid_request_error / context_length_exceeded
    │   ├── UnknownModel            404 invalid_request_error / model_not_found
    │   ├── RequestTimeout          408 invalid_request_error / request_timeout (slow body)
    │   ├── PayloadTooLarge         413 invalid_request_error / request_too_large
    │   ├── RateLimited             429 rate_limit_exceeded (a Budget's rpm/tpm) + Retry-After
    │   │   └── BudgetExceeded      429 insufficient_quota / budget_exceeded + Retry-After
    │   └── GuardrailBlocked        400 content_filter (input); an answer ends with
    │                               finish_reason content_filter instead
    ├── NotReady                    503 service_unavailable: no valid config loaded
    ├── NoBackendAvailable          503 service_unavailable + Retry-After: every backend ejected
    └── UpstreamError               one try against one backend failed; carries its FailureClass
        ├── UpstreamConnectError    502 connectError  (refused, reset before any byte, DNS)
        ├── UpstreamTLSError        502 connectError, never retried against the same host
        ├── UpstreamTimeout         504 timeout
        ├── UpstreamStatusError     the provider answered non-2xx: 429 → 429, 5xx → 502,
        │                           4xx → same status (not retried); message sanitised
        ├── BadUpstreamResponse     502 5xx class (HTML page, non-JSON, broken stream)
        │   └── UpstreamTooLarge    502, not retried: an answer over limits.maxResponseBytes
        ├── UpstreamStreamError     502: the provider failed inside a 200 (in-band error event)
        ├── MissingCredential       503, this backend only (falls over to the next one)
        └── UnsupportedProvider     502: the config names a provider this sidecar cannot speak

``FailureClass`` (from the contract) drives retry and fallback; ``None`` means "do not retry".
"""

# ruff: noqa: N818 - names follow httpx (ConnectTimeout, …): the tree reads better without "Error"
from __future__ import annotations

import json
from typing import Any

from .contract import FailureClass

_MAX_UPSTREAM_MESSAGE = 300


class SluiceError(Exception):
    """Base: a failure that ends as an HTTP error response (or a terminal SSE error event)."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None
    #: Answer and close the connection without reading the rest of the request (a body that
    #: is too large, too slow or cannot be decoded).
    close_connection: bool = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        return {}


class RequestError(SluiceError):
    status = 400
    type = "invalid_request_error"


class InvalidJSON(RequestError):
    code = "invalid_json"


class InvalidField(RequestError):
    code = "invalid_value"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"Invalid value for '{param}': {message}", param=param)


class ContextLengthExceeded(RequestError):
    code = "context_length_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="messages")


class UnknownModel(RequestError):
    status = 404
    code = "model_not_found"

    def __init__(self, model: str, known: list[str]) -> None:
        hint = ", ".join(sorted(known)[:20]) or "none configured"
        if len(model) > 100:
            model = model[:100] + "…"
        super().__init__(
            f"The model '{model}' does not exist on this Sluice sidecar. Known models: {hint}.",
            param="model",
        )


class PayloadTooLarge(RequestError):
    status = 413
    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Request body is larger than the limit of {limit} bytes (limits.maxRequestBytes)."
        )


class RequestTimeout(RequestError):
    status = 408
    code = "request_timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The request body did not arrive within {seconds:g}s (limits.bodyTimeout); "
            "the connection is closed."
        )


class RateLimited(SluiceError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return _retry_after_header(self.retry_after)


class BudgetExceeded(RateLimited):
    """429: a Budget's limit would be broken. ``type`` is OpenAI's for a spent quota, so clients
    that stop retrying on it do the right thing; ``Retry-After`` says when the window resets.
    ``exceeded`` is the budget stage's record of which limit said no (``budget.Exceeded``)."""

    type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, exceeded: Any, message: str) -> None:
        super().__init__(message, retry_after=exceeded.retry_after)
        self.exceeded = exceeded


_GUARD_CHECKS = {
    "pii": "personal data",
    "deny": "a denied pattern",
    "promptInjection": "a suspected prompt injection",
    "maxChars": "text longer than allowed",
}


class GuardrailBlocked(RequestError):
    """A guardrail blocked the request (400) or the answer (``finish_reason: content_filter``).
    ``stage`` is "input" or "output"; ``check`` the check that blocked."""

    status = 400
    type = "content_filter"
    code = "content_filter"

    def __init__(self, policy: str, stage: str, check: str, detail: str = "") -> None:
        what = _GUARD_CHECKS.get(check, check) + (f" ({detail})" if detail else "")
        where = "request" if stage == "input" else "answer"
        super().__init__(
            f"The {where} was blocked by guardrail policy '{policy}': it contains {what}.",
            param="messages" if stage == "input" else None,
        )
        self.policy = policy
        self.stage = stage
        self.check = check


class NotReady(SluiceError):
    status = 503
    type = "service_unavailable"
    code = "config_not_loaded"


class NoBackendAvailable(SluiceError):
    status = 503
    type = "service_unavailable"
    code = "no_backend_available"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return _retry_after_header(self.retry_after)


#: Seconds an OpenAI-dialect client is told to wait (``Retry-After``) after an overloaded provider
#: that named no time of its own.
OVERLOADED_RETRY_AFTER = 2.0


class UpstreamError(SluiceError):
    """One try against one backend failed. ``failure`` decides retry/fallback (None: never)."""

    status = 502
    type = "upstream_error"
    failure: FailureClass | None = FailureClass.SERVER_ERROR
    #: False when trying the same backend again can only fail the same way (TLS, bad key).
    retry_same_backend: bool = True
    #: Whether this counts against the backend's circuit breaker.
    counts_for_breaker: bool = True
    #: The provider said it is overloaded (``set_overloaded``).
    overloaded: bool = False

    def __init__(self, message: str, *, backend: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.backend = backend
        self.retry_after = retry_after

    def set_overloaded(self) -> None:
        """The provider said it is overloaded (Anthropic's 529 ``overloaded_error``, as a status
        or a stream event): OpenAI-dialect clients are answered 503 ``service_unavailable`` with
        a ``Retry-After`` (the provider's, else ``OVERLOADED_RETRY_AFTER``), so their SDKs retry;
        an Anthropic client gets 529 ``overloaded_error``, as the provider would answer. The
        routing decision is unchanged (no invented Retry-After reaches it)."""
        self.overloaded = True
        self.status, self.type = 503, "service_unavailable"

    def headers(self) -> dict[str, str]:
        seconds = self.retry_after
        if seconds is None and self.overloaded:
            seconds = OVERLOADED_RETRY_AFTER
        return _retry_after_header(seconds)


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_error"
    failure = FailureClass.CONNECT_ERROR


class UpstreamTLSError(UpstreamError):
    code = "upstream_tls_error"
    failure = FailureClass.CONNECT_ERROR
    retry_same_backend = False


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    failure = FailureClass.TIMEOUT


class BadUpstreamResponse(UpstreamError):
    code = "bad_upstream_response"
    failure: FailureClass | None = FailureClass.SERVER_ERROR


class UpstreamTooLarge(BadUpstreamResponse):
    """A non-streamed answer over the limit. Not retried: the provider generated (and billed)
    it, and asking again would most likely pay for the same again."""

    code = "upstream_response_too_large"
    failure = None
    counts_for_breaker = False


class UpstreamStreamError(UpstreamError):
    code = "upstream_stream_error"
    failure: FailureClass | None = FailureClass.SERVER_ERROR


class MissingCredential(UpstreamError):
    status = 503
    type = "service_unavailable"
    code = "missing_credential"
    failure = FailureClass.CONNECT_ERROR
    retry_same_backend = False
    counts_for_breaker = False


class UnsupportedProvider(UpstreamError):
    code = "unsupported_provider"
    failure = FailureClass.CONNECT_ERROR
    retry_same_backend = False
    counts_for_breaker = False


class UpstreamStatusError(UpstreamError):
    """The provider answered with a non-2xx status; ``upstream_status`` keeps it."""

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        backend: str = "",
        retry_after: float | None = None,
        upstream_code: str | None = None,
        upstream_type: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.failure = classify_status(upstream_status, upstream_code, message)
        self.counts_for_breaker = self.failure in (
            FailureClass.SERVER_ERROR,
            FailureClass.TIMEOUT,
        )
        self.retry_same_backend = upstream_status not in (401, 403)
        if upstream_status == 429:
            self.status, self.type, self.code = 429, "rate_limit_exceeded", "rate_limit_exceeded"
        elif upstream_status >= 500:
            self.status, self.type, self.code = 502, "upstream_error", f"upstream_{upstream_status}"
            if upstream_status == 529:
                self.set_overloaded()
        else:
            self.status = upstream_status
            self.type = upstream_type or "invalid_request_error"
            self.code = upstream_code or f"upstream_{upstream_status}"


def classify_status(status: int, code: str | None, message: str) -> FailureClass | None:
    """Sort a provider's non-2xx answer into a FailureClass; None: the request itself is wrong.

    A purely computational function with no side-effects.
    """
    if status == 429:
        return FailureClass.RATE_LIMITED
    if status in (408, 504):
        return FailureClass.TIMEOUT
    if status >= 500:
        return FailureClass.SERVER_ERROR
    text = f"{code or ''} {message}".lower()
    if "context_length" in text or "context window" in text or "maximum context" in text:
        return FailureClass.CONTEXT_WINDOW_EXCEEDED
    if "content_filter" in text or "content_policy" in text or "content management" in text:
        return FailureClass.CONTENT_FILTER
    return None


def sanitise(text: str) -> str:
    """An upstream message made safe to show: one line, printable, bounded, no HTML markup."""
    if "<" in text and ">" in text:
        return "the provider returned a non-JSON (HTML) error page"
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if len(cleaned) > _MAX_UPSTREAM_MESSAGE:
        cleaned = cleaned[:_MAX_UPSTREAM_MESSAGE] + "…"
    return cleaned


def error_object(err: SluiceError) -> dict[str, Any]:
    """The OpenAI-shaped ``{"error": {...}}`` object for ``err``."""
    return {
        "error": {
            "message": err.message,
            "type": err.type,
            "param": err.param,
            "code": err.code,
        }
    }


def error_body(err: SluiceError) -> bytes:
    return json.dumps(error_object(err), ensure_ascii=False).encode()


def internal_error() -> SluiceError:
    return SluiceError("Internal error in the Sluice sidecar; see its logs.")


def _retry_after_header(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, int(seconds + 0.999)))}
