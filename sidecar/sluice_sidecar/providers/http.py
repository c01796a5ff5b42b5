"""The HTTP edge shared by HTTP providers: sending with aiohttp and mapping its failures.

Owns the translation of transport exceptions (aiohttp, OSError) into ``errors.UpstreamError``
subclasses and of non-2xx answers into ``UpstreamStatusError`` with a sanitised message and the
parsed ``Retry-After``. Nothing else here knows a provider's wire format.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp

from .. import errors, routing

MAX_ERROR_BODY = 64 * 1024
_DECODER = json.JSONDecoder()


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

#: A provider's view of its own error answer: (status, code, type, message) → (status, code,
#: type) in OpenAI's vocabulary, so that e.g. "prompt is too long" becomes
#: ``context_length_exceeded`` and is classified like OpenAI's.
Normaliser = Callable[[int, str | None, str | None, str], tuple[int, str | None, str | None]]


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
    normalise: Normaliser | None = None,
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
    if normalise is not None:
        status, code, etype = normalise(status, code, etype, message)
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
    try:
        return raw, _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return raw, None


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
        value = routing.parse_retry_after(ms, now_wall)
        if value is not None:
            return value / 1000.0
    return routing.parse_retry_after(headers.get("retry-after"), now_wall)
