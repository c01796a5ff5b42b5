"""Reading a request body within the configured size and time limits.

Owns ``buffered_body`` (the usual small request, whose body came with its head) and
``read_body`` (the rest: refused with 413 as soon as it is known to be over
``limits.maxRequestBytes`` — by Content-Length before reading anything, else while reading — and
with 408 when it does not arrive within ``limits.bodyTimeout``), so memory stays bounded by the
limit and a slow client cannot hold a handler.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.streams import StreamReader

from .. import errors


def buffered_body(request: web.Request, limit: int) -> bytes | None:
    """The body when all of it is in memory already (the usual small request: it came with the
    head), else None (then ``read_body``). 413 when it is over ``limit``."""
    length = request.content_length
    if length is not None and length > limit:
        raise errors.PayloadTooLarge(limit)
    content = request.content
    if not content.is_eof():
        return None
    data = content.read_nowait()
    if length is not None and len(data) != length:
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
    content = request.content
    if content.is_eof():
        return await _read(content, length, limit)
    try:
        async with asyncio.timeout(seconds):
            return await _read(content, length, limit)
    except TimeoutError:
        raise errors.RequestTimeout(seconds) from None


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
