"""The one scrubber for everything an upstream says: keys out, codes into a fixed vocabulary,
usage into range.

Owns what the sidecar trusts of an upstream's answer, which is nothing it did not check:

* ``Scrubber.text``: the key values the sidecar holds (``Credentials.known``, and the key of
  the try at hand) and key-shaped strings (``sk-…``, ``AIza…``, ``Bearer …``, JWTs,
  ``api_key=…``) are replaced by ``[REDACTED]``, before the text is cut to length, so a
  provider that echoes the request's ``Authorization`` or ``x-api-key`` header cannot get a key
  into a client's answer, a log, an audit record, a span or a metric label;
* ``Scrubber.error``: every ``UpstreamError`` that leaves the adapter has its message scrubbed
  and cut, and its ``code`` and ``type`` (which become audit fields, span attributes and metric
  labels) mapped to ``CODES`` / ``TYPES``; anything else becomes ``upstream_<status>`` /
  ``invalid_request_error`` (a provider's raw text stays only in the client's message);
* ``Scrubber.answer``: the known key values are removed from a 2xx answer's bytes (a model may
  repeat what it was sent); key-*shaped* strings in answers are left to the guardrails'
  ``API_KEY`` entity, since an answer may rightly contain one;
* ``usage_in_range``: a provider's token counts are used only when each is an integer in
  ``0..MAX_TOKENS``; otherwise they are dropped and the request path counts
  tokens from the text (and a warning metric says so).

Pure apart from reading the known keys through the callable it is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .. import errors
from ..model import Usage

REDACTED = "[REDACTED]"
_REDACTED_BYTES = REDACTED.encode()
#: The most tokens one answer can plausibly report; more is an upstream bug or an attack.
MAX_TOKENS = 100_000_000
#: Known key values shorter than this are not searched for (they would match ordinary text).
_MIN_KEY = 8

_KEY_SHAPED = re.compile(
    r"(?i:bearer|basic)\s+[^\s\"',;]+"  # an Authorization header's value
    r"|(?i:x-api-key|x-goog-api-key|api[-_]?key|authorization|access[-_]?token|secret)"
    r"[\"']?\s*[:=]\s*[\"']?(?:(?i:bearer|basic)\s+)?[^\s\"',;}]+"  # key=value, "x-api-key": "v"
    r"|sk-[A-Za-z0-9_\-]{8,}"  # OpenAI, Anthropic (sk-ant-…), Mistral-style
    r"|AIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWTs (SA tokens)
    r"|\b(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{40,}\b"  # long opaque tokens
)

#: Error codes an upstream may contribute to labels and audit fields (OpenAI's vocabulary,
#: which the dialects' ``normalise_error`` map every provider's into); the sidecar's own
#: codes are added by ``_own_codes``.
CODES = frozenset(
    {
        "context_length_exceeded",
        "content_filter",
        "rate_limit_exceeded",
        "insufficient_quota",
        "invalid_api_key",
        "permission_denied",
        "model_not_found",
        "request_too_large",
        "invalid_value",
        "invalid_type",
        "missing_required_parameter",
        "unsupported_parameter",
        "unsupported_value",
        "overloaded",
        "timeout",
        "server_error",
    }
)
TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "rate_limit_exceeded",
        "insufficient_quota",
        "server_error",
        "service_unavailable",
        "upstream_error",
        "content_filter",
    }
)
_STATUS_CODE = re.compile(r"upstream_[1-5][0-9][0-9]")


def _own_codes() -> frozenset[str]:
    out: set[str] = set()
    stack: list[type[errors.SluiceError]] = [errors.UpstreamError]
    while stack:
        cls = stack.pop()
        if cls.code:
            out.add(cls.code)
        stack.extend(cls.__subclasses__())
    return frozenset(out)


_OWN_CODES = _own_codes()


def code_of(code: str | None, status: int | None) -> str | None:
    """``code`` when it is in the vocabulary, else ``upstream_<status>`` (None without one)."""
    if code is not None and (code in CODES or code in _OWN_CODES or _STATUS_CODE.fullmatch(code)):
        return code
    return f"upstream_{status}" if status is not None else None


def type_of(etype: str | None) -> str:
    return etype if etype is not None and etype in TYPES else "invalid_request_error"


class Scrubber:
    """Scrubs upstream text of the keys ``known`` returns (and of key-shaped strings)."""

    def __init__(self, known: Callable[[], Iterable[str]] = tuple) -> None:
        self._known = known
        #: The last ``_keys`` asked for: (known keys, extra key, the keys, the keys as bytes).
        self._last: tuple[tuple[str, ...], str | None, list[str], list[bytes]] = ((), None, [], [])

    def _keys(self, extra: str | None) -> list[str]:
        return self._lookup(extra)[2]

    def _key_bytes(self, extra: str | None) -> list[bytes]:
        return self._lookup(extra)[3]

    def _lookup(
        self, extra: str | None
    ) -> tuple[tuple[str, ...], str | None, list[str], list[bytes]]:
        """The keys to remove, longest first, as text and as bytes; worked out again only when
        the known keys or ``extra`` changed since the last call (every request asks the same)."""
        known = tuple(self._known())
        last = self._last
        if known == last[0] and extra == last[1]:
            return last
        keys = {k for k in known if len(k) >= _MIN_KEY}
        if extra is not None and len(extra) >= _MIN_KEY:
            keys.add(extra)
        ordered = sorted(keys, key=len, reverse=True)
        self._last = last = (known, extra, ordered, [k.encode() for k in ordered])
        return last

    def answer_filter(self, extra: str | None = None) -> Callable[[bytes], bytes]:
        """``answer`` for the frames of one stream, with the keys looked up once."""
        keys = self._key_bytes(extra)
        if not keys:
            return _same
        redacted = REDACTED.encode()

        def clean(body: bytes) -> bytes:
            for key in keys:
                if body.find(key) >= 0:  # not ``in``: bytes ``in`` first tries an integer
                    body = body.replace(key, redacted)
            return body

        return clean

    def text(self, text: str, extra: str | None = None) -> str:
        """``text`` without known keys and key-shaped strings."""
        for key in self._keys(extra):
            if key in text:
                text = text.replace(key, REDACTED)
        return _KEY_SHAPED.sub(REDACTED, text)

    def answer(self, body: bytes, extra: str | None = None) -> bytes:
        """A 2xx answer's bytes without the known key values (cheap when none is in them)."""
        for raw in self._key_bytes(extra):
            if body.find(raw) >= 0:
                body = body.replace(raw, _REDACTED_BYTES)
        return body

    def error(self, err: errors.UpstreamError, extra: str | None = None) -> errors.UpstreamError:
        """``err`` made safe to leave the adapter (in place): message scrubbed and cut, code and
        type from the vocabulary."""
        err.message = errors.sanitise(self.text(err.message, extra))
        err.args = (err.message,)
        status = getattr(err, "upstream_status", None)
        if isinstance(err, errors.UpstreamStatusError):
            if err.upstream_status < 400:  # a redirect or other non-error the client can't use
                err.status, err.type = 502, "upstream_error"
            elif err.upstream_status < 500 and err.upstream_status != 429:
                err.type = type_of(err.type)
        elif err.type not in TYPES:
            err.type = "upstream_error"
        err.code = code_of(err.code, status) or "upstream_error"
        return err


def _same(body: bytes) -> bytes:
    return body


def usage_in_range(u: Usage | None) -> tuple[Usage | None, bool]:
    """(``u`` when every count is an integer in range, else None; whether ``u`` was dropped)."""
    if u is None:
        return None, False
    i, o, c = u.input_tokens, u.output_tokens, u.cached_input_tokens
    if (
        type(i) is int
        and type(o) is int
        and type(c) is int
        and 0 <= i <= MAX_TOKENS
        and 0 <= o <= MAX_TOKENS
        and 0 <= c <= MAX_TOKENS
    ):
        return u, False
    return None, True
