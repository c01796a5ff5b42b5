"""The one HTTP adapter: every provider's request is posted, read and mapped here.

Owns ``HttpTransport`` (POST with the route's connect timeout; ``ClientTimeout`` objects built
once per value), ``HttpUpstream`` (a 2xx answer: read whole within ``limits.maxResponseBytes``,
or the SSE loop that hands each event to the translator's ``StreamDecoder`` and batches the
frames of one network read into one write), the translation of transport exceptions (aiohttp,
OSError) into ``errors.UpstreamError`` subclasses, and of non-2xx answers into
``UpstreamStatusError`` with a sanitised message (through the dialect's ``normalise_error``) and
the parsed ``Retry-After`` (``retry-after-ms`` or RFC 9110 ``Retry-After``). What the bytes
mean is the translator's business: nothing here knows a wire format.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import AsyncGenerator
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from .. import errors
from ..clock import Clock
from ..model import Usage
from ..translate import Answer, BackendDialect, Call
from ..translate.base import loads_json
from .base import Upstream
from .scrub import Scrubber, usage_in_range

MAX_ERROR_BODY = 64 * 1024


def map_exception(exc: BaseException, backend: str, *, after_headers: bool) -> errors.UpstreamError:
    """The most specific ``UpstreamError`` for a transport exception."""
    if isinstance(
        exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError
    ):
        return errors.UpstreamTLSError(
            f"TLS failure talking to backend '{backend}': {exc}. Verification is never disabled; "
            "fix the certificate or the baseURL.",
            backend=backend,
        )
    if after_headers:
        return errors.BadUpstreamResponse(
            f"Backend '{backend}' broke the connection while sending its answer "
            f"({type(exc).__name__}).",
            backend=backend,
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return errors.UpstreamConnectError(
            f"Cannot resolve the host of backend '{backend}': {exc.os_error}", backend=backend
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return errors.UpstreamConnectError(
            f"Cannot connect to backend '{backend}': {exc.os_error}", backend=backend
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return errors.UpstreamConnectError(
            f"Timed out connecting to backend '{backend}'.", backend=backend
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        return errors.BadUpstreamResponse(
            f"Backend '{backend}' sent an invalid HTTP response: {exc.message}", backend=backend
        )
    if isinstance(exc, aiohttp.InvalidURL):
        err = errors.UpstreamConnectError(
            f"Backend '{backend}' has an invalid URL: {exc}", backend=backend
        )
        err.retry_same_backend = False
        return err
    return errors.UpstreamConnectError(
        f"Connection to backend '{backend}' failed before any response byte "
        f"({type(exc).__name__}); safe to retry.",
        backend=backend,
    )


TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, ssl.SSLError)


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of the body, and whether there was more."""
    length = resp.content_length
    if length is not None and length <= cap and "Content-Encoding" not in resp.headers:
        try:
            return await resp.content.readexactly(length), False
        except asyncio.IncompleteReadError as exc:  # the provider closed early
            raise aiohttp.ClientPayloadError("Response payload is not completed") from exc
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(65536)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size > cap:
            chunks.append(chunk[: cap - (size - len(chunk))])
            return b"".join(chunks), True
        chunks.append(chunk)


async def status_error(
    resp: aiohttp.ClientResponse,
    backend: str,
    now_wall: float,
    dialect: BackendDialect | None = None,
) -> errors.UpstreamStatusError:
    """Read a non-2xx answer (bounded) and turn it into an ``UpstreamStatusError``."""
    try:
        raw, _ = await read_capped(resp, MAX_ERROR_BODY)
    except TRANSPORT_ERRORS:
        raw = b""
    finally:
        resp.close()
    message, code, etype = parse_error_body(raw)
    if message is None:
        message = (
            f"the provider answered HTTP {resp.status} with a non-JSON body "
            f"({errors.sanitise(resp.content_type)[:60]})"
            if raw.strip()
            else f"the provider answered HTTP {resp.status}"
        )
    status = resp.status
    if dialect is not None:
        status, code, etype = dialect.normalise_error(status, code, etype, message)
    return errors.UpstreamStatusError(
        status,
        f"Backend '{backend}': {errors.sanitise(message)}",
        backend=backend,
        retry_after=retry_after(resp.headers, now_wall),
        upstream_code=code,
        upstream_type=etype,
    )


async def read_answer(resp: aiohttp.ClientResponse, backend: str, cap: int) -> tuple[bytes, Any]:
    """A 2xx non-streamed answer (bytes and its JSON value, None when it is not JSON) read
    within ``cap`` bytes; ``UpstreamTooLarge`` over it, the mapped error when the connection
    breaks. An answer that arrived with its headers (the usual case) is taken as it is."""
    content = resp.content
    try:
        if content.is_eof():
            raw = content.read_nowait()
            more = len(raw) > cap
        else:
            raw, more = await read_capped(resp, cap)
    except TRANSPORT_ERRORS as exc:
        raise map_exception(exc, backend, after_headers=True) from exc
    if more:
        resp.close()
        raise errors.UpstreamTooLarge(
            f"Backend '{backend}' sent an answer larger than {cap} bytes "
            "(limits.maxResponseBytes); it was not passed on.",
            backend=backend,
        )
    return raw, loads_json(raw)


def parse_error_body(raw: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, code, type) from an OpenAI-style (or similar) error body, when it is JSON."""
    try:
        obj: Any = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None, None
    if not isinstance(obj, dict):
        return None, None, None
    err = obj.get("error", obj)
    if isinstance(err, str):
        return err, None, None
    if not isinstance(err, dict):
        return None, None, None
    message = err.get("message") or err.get("detail") or obj.get("message")
    code = err.get("code")
    etype = err.get("type")
    return (
        str(message) if message is not None else None,
        str(code) if isinstance(code, str | int) else None,
        str(etype) if isinstance(etype, str) else None,
    )


def retry_after(headers: Any, now_wall: float) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI, Azure) or ``Retry-After`` (RFC 9110)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        value = parse_retry_after(ms, now_wall)
        if value is not None:
            return value / 1000.0
    return parse_retry_after(headers.get("retry-after"), now_wall)


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110: delay-seconds or HTTP-date).

    Returns None when absent or unparseable (the caller then uses its default back-off); a date in
    the past gives 0. Capping is the caller's (it knows ``maxRetryAfter``). Decimal seconds, which
    some providers send, are accepted.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.replace(".", "", 1).isdigit():
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


# --- the adapter ------------------------------------------------------------------------------


class HttpTransport:
    """POSTs a try through its dialect with aiohttp; ``ClientTimeout`` objects per connect
    timeout are built once and reused."""

    def __init__(
        self, session: aiohttp.ClientSession, clock: Clock, scrubber: Scrubber | None = None
    ) -> None:
        self._session = session
        self._clock = clock
        self._scrub = scrubber or Scrubber()
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    async def open(self, call: Call, dialect: BackendDialect) -> Upstream:
        try:
            return await self._open(call, dialect)
        except errors.UpstreamError as err:
            self._scrub.error(err, call.api_key)
            raise

    async def _open(self, call: Call, dialect: BackendDialect) -> Upstream:
        name = call.backend.name
        if call.operation not in dialect.operations:
            raise errors.UnsupportedProvider(
                f"Backend '{name}' ({call.backend.provider}) cannot serve {call.operation}.",
                backend=name,
            )
        try:
            url, payload, headers = dialect.request(call)
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            # a shape the request checks let through but this translator cannot take: still
            # the client's mistake (400), never a 500
            raise errors.InvalidField(
                "<body>",
                f"a field has a type backend '{name}' ({call.backend.provider}) cannot take "
                f"({errors.sanitise(type(exc).__name__ + ': ' + str(exc))[:120]})",
            ) from None
        if call.trace_headers:
            headers.update(call.trace_headers)
        connect = call.route.timeouts.connect
        timeout = self._timeouts.get(connect)
        if timeout is None:
            timeout = self._timeouts[connect] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect
            )
        try:
            resp = await self._session.post(url, data=payload, headers=headers, timeout=timeout)
        except TRANSPORT_ERRORS as exc:
            raise map_exception(exc, name, after_headers=False) from exc
        if not 200 <= resp.status < 300:
            raise await status_error(resp, name, self._clock.wall(), dialect)
        return HttpUpstream(resp, call, dialect, int(self._clock.wall()), self._scrub)


class HttpUpstream(Upstream):
    """A 2xx response read through a translator's backend half; what it hands on passed the
    scrubber (errors, known keys in the answer, usage out of range)."""

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        call: Call,
        dialect: BackendDialect,
        created: int,
        scrubber: Scrubber,
    ) -> None:
        self._resp = resp
        self._call = call
        self._dialect = dialect
        self._created = created
        self._scrub = scrubber
        #: The decoder's usage last passed through ``usage_in_range``.
        self._reported: Usage | None = None

    async def read(self) -> bytes:
        try:
            return await self._read()
        except errors.UpstreamError as err:
            self._scrub.error(err, self._call.api_key)
            raise

    async def _read(self) -> bytes:
        call = self._call
        name = call.backend.name
        raw, obj = await read_answer(self._resp, name, call.max_response_bytes)
        if not isinstance(obj, dict):
            raise errors.BadUpstreamResponse(
                f"Backend '{name}' answered 200 with a body that is not a JSON object "
                f"(content-type {self._resp.content_type!r}).",
                backend=name,
            )
        answer: Answer = self._dialect.answer(call, raw, obj, self._created)
        self.usage, self.usage_invalid = usage_in_range(answer.usage)
        self.complete = True
        return self._scrub.answer(answer.body, call.api_key)

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """Frames as they arrive; the frames of one network read go out as one write. Every
        failure and every frame passes the scrubber."""
        call = self._call
        name, key, scrub = call.backend.name, call.api_key, self._scrub
        clean = scrub.answer_filter(key)
        decoder = self._dialect.stream(call, self._created)
        content = self._resp.content
        try:
            while not decoder.finished:
                raw = await content.readany()
                if not raw:
                    break
                batch: list[bytes] = []
                try:
                    decoder.feed(raw, batch)
                except errors.UpstreamError as err:
                    self._sync(decoder)
                    if batch:
                        yield clean(b"".join(batch))
                    scrub.error(err, key)
                    raise
                self._sync(decoder)
                if batch:
                    yield clean(batch[0] if len(batch) == 1 else b"".join(batch))
        except TRANSPORT_ERRORS as exc:
            raise scrub.error(map_exception(exc, name, after_headers=True), key) from exc
        try:
            tail = decoder.end()
        except errors.UpstreamError as err:
            scrub.error(err, key)
            raise
        self._sync(decoder)
        if tail:
            yield clean(b"".join(tail))

    def _sync(self, decoder: Any) -> None:
        reported = decoder.usage
        if reported is not self._reported:  # a new report (decoders never change one)
            self._reported = reported
            self.usage, self.usage_invalid = usage_in_range(reported)
        self.complete = decoder.complete
        self.content_chunks = decoder.content_chunks
        self.drained = decoder.finished

    def close(self) -> None:
        self._resp.close()

    def release(self) -> None:
        self._resp.release()
