"""Reading a request body within the configured size and time limits.

Owns ``buffered_body`` (the usual small request, whose body came with its head) and
``read_body`` (the rest: refused with 413 as soon as it is known to be over
``limits.maxRequestBytes`` — by Content-Length before reading anything, else while reading — and
with 408 when it does not arrive within ``limits.bodyTimeout``), so memory stays bounded by the
limit and a slow client cannot hold a handler.

A body sent with ``Content-Encoding: gzip`` or ``deflate`` is decoded by aiohttp as it is read
(in bounded pieces); the limit applies to the decoded bytes (a bomb is a 413 once it has grown
past it), its Content-Length is the encoded size (never compared with the decoded one), and a
body that cannot be decoded is a 400.
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError

from .. import errors


def _undecodable(request: web.Request) -> errors.InvalidJSON:
    encoding = errors.sanitise(request.headers.get(hdrs.CONTENT_ENCODING, ""))[:40]
    err = errors.InvalidJSON(
        f"The request body could not be decoded (Content-Encoding: {encoding}); send it "
        "uncompressed, or as valid gzip or deflate data."
    )
    err.close_connection = True
    # nothing more of this body can be read: end it, so that aiohttp does not try to drain it
    # (its lingering read would raise the decoding error again, with a traceback in the log)
    request.content.feed_eof()
    return err


def buffered_body(request: web.Request, limit: int) -> bytes | None:
    """The body when all of it is in memory already (the usual small request: it came with the
    head), else None (then ``read_body``). 413 when it is over ``limit``."""
    length = request.content_length
    if length is not None and length > limit:
        raise errors.PayloadTooLarge(limit)
    content = request.content
    if not content.is_eof():
        return None
    try:
        data = content.read_nowait()
    except (HttpProcessingError, RequestPayloadError):
        raise _undecodable(request) from None
    if length is not None and len(data) != length and hdrs.CONTENT_ENCODING not in request.headers:
        raise errors.InvalidJSON("The request body is shorter than its Content-Length.")
    if len(data) > limit:
        raise errors.PayloadTooLarge(limit)
    return data


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed ``limit``: by Content-Length
    before reading anything, else while reading, so memory stays bounded by ``limit``. A body
    that does not arrive within ``seconds`` is refused with 408 (slowloris); a body
    already in the buffer (the usual small request) is taken without starting a timer."""
    length = request.content_length
    if length is not None and length > limit:
        raise errors.PayloadTooLarge(limit)
    if length == 0:
        return b""
    if hdrs.CONTENT_ENCODING in request.headers:
        length = None  # the encoded size: read the decoded bytes to their end, within the limit
    content = request.content
    try:
        if content.is_eof():
            return await _read(content, length, limit)
        async with asyncio.timeout(seconds):
            return await _read(content, length, limit)
    except TimeoutError:
        raise errors.RequestTimeout(seconds) from None
    except (HttpProcessingError, RequestPayloadError):
        raise _undecodable(request) from None


async def _read(content: StreamReader, length: int | None, limit: int) -> bytes:
    if length is not None:
        try:
            return await content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise errors.InvalidJSON(
                "The request body is shorter than its Content-Length."
            ) from None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(limit)
        chunks.append(chunk)
