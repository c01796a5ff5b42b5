"""Streamed answers: the commit point, the relay, the stages' filters, the output limit and
mid-stream failures.

Owns what happens once a chat request asked for ``stream: true``. A try opens the stream and
waits for its first frame (``try_stream``): until then a failure is retried or falls over
invisibly (``dispatch``). The first frame commits: the response headers go out and frames are
relayed as they arrive, with ``timeouts.idle`` between upstream frames (not counting time the
client takes to read) and ``timeouts.total`` over everything. After the commit there is no silent
fallback:

* a failure (stall, cut, in-band error, unparseable event) ends the client's stream with the
  content so far plus one terminal error event and never a ``[DONE]`` — unless the route says
  ``midStreamFailure: Continue`` and ``routing`` allows another try: then the next backend is
  asked to continue the partial answer (``continuation``) and its chunks are spliced into the
  same stream (one ``role``, one ``[DONE]``); both tries are in the audit record;
* an answer that reaches ``limits.maxStreamBytes`` (a runaway or endless upstream stream) is cut
  at the last whole event within the limit and ended as if it had hit its token limit
  (``finish_reason: "length"`` and ``[DONE]``; ``stop_reason: "max_tokens"`` for
  ``/v1/messages``); the upstream connection is dropped and the estimated output is capped at
  the request's ``max_tokens``.

Each frame goes to the client through one line of steps (``_Relay.write``): a continuation's
frames are spliced into the first stream (``continuation.Splicer``); the stages' filters see the
text deltas of each choice (``filtering.ChunkFilters``: holdback redaction; a block ends the
stream with ``finish_reason: content_filter`` then ``[DONE]``); the translator's client half
reshapes canonical chunks into the client's events (``/v1/messages``); the output limit counts
what is written. A stream with none of these steps is relayed as it arrives, without a detour.

Usage is settled per try (provider-reported when a try completed, else estimated) and summed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

from aiohttp import web

from .. import errors, metering, routing, validate
from ..contract import MidStreamFailure
from ..errors import UpstreamError
from ..exchange import Exchange
from ..model import Usage, total_usage
from ..stage import Stages
from ..translate import Call, StreamReshaper, Translator
from ..upstream import Upstream
from . import continuation, dispatch
from .filtering import ChunkFilters
from .state import Gateway

_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
Opened = tuple[Upstream, AsyncGenerator[bytes, None], bytes | None, Translator]


class _EventStream(web.StreamResponse):
    """The client's stream: its headers go out with its first frame, in one write (aiohttp's
    ``Response`` buffers its headers the same way; a ``StreamResponse`` sends them at
    ``prepare`` by default). ``_Relay.run`` writes the first frame at once, and sends the
    headers alone when the stages' filters held all of it."""

    _send_headers_immediately = False


class _Cut:
    """The relay stopped at ``limits.maxStreamBytes``."""


class _Blocked:
    """A stage's filter ended the stream (``finish_reason: content_filter`` was written)."""


CUT = _Cut()
BLOCKED = _Blocked()


async def try_stream(gw: Gateway, ex: Exchange, call: Call, tr: Translator) -> Opened:
    """Open the stream and wait for its first frame: the last point where a retry is invisible."""
    first_budget = dispatch.time_left(gw, ex, call.route.timeouts.first_token)
    up: Upstream | None = None
    frames: AsyncGenerator[bytes, None] | None = None
    try:
        with dispatch.TryTimer(first_budget, gw.loop):
            up = await gw.transports[call.backend.provider].open(call, tr.backend)
            frames = up.frames()
            first = await anext(frames, None)
    except BaseException as exc:
        if frames is not None:
            await frames.aclose()
        if up is not None:
            up.close()
        if isinstance(exc, TimeoutError):
            raise dispatch.timeout_error(call, "sent no first token", first_budget) from None
        raise
    return up, frames, first, tr


class _Relay:
    """Writes frames to the client through the stream's steps (splice, filter, reshape), counts
    bytes against the limit and records the transcript a continuation needs."""

    __slots__ = ("filters", "limit", "reshape", "resp", "sent", "splicer", "transcript")

    def __init__(
        self,
        resp: web.StreamResponse,
        limit: int,
        transcript: continuation.Transcript | None,
        filters: ChunkFilters | None,
        reshape: StreamReshaper | None,
    ) -> None:
        self.resp = resp
        self.limit = limit
        self.sent = 0
        self.transcript = transcript
        self.splicer: continuation.Splicer | None = None
        self.filters = filters
        self.reshape = reshape

    @property
    def plain(self) -> bool:
        return (
            self.splicer is None
            and self.transcript is None
            and self.filters is None
            and self.reshape is None
        )

    async def write(self, frame: bytes) -> bool:
        """Write ``frame`` through the steps; False when it does not fit under the limit (the
        whole events of it that fit were written) or a filter blocked the stream."""
        if self.splicer is not None:
            frame = self.splicer.rewrite(frame)
        if self.filters is not None and frame:
            frame, rest = self.filters.feed_now(frame)  # the usual chunks: no coroutine
            if rest:  # from the first event that ends a text on
                frame += await self.filters.feed(rest)
        if self.reshape is not None and frame:
            frame = self.reshape.feed(frame)
        if not frame:
            return self.filters is None or self.filters.blocked is None
        return await self.write_out(frame) and (
            self.filters is None or self.filters.blocked is None
        )

    async def write_out(self, frame: bytes) -> bool:
        """Write ``frame`` as it is, within the limit."""
        sent = self.sent + len(frame)
        fits = sent <= self.limit
        if not fits:
            end = frame.rfind(b"\n\n", 0, self.limit - self.sent)
            frame = frame[: end + 2] if end >= 0 else b""
            sent = self.sent + len(frame)
        self.sent = sent
        if frame:
            if self.transcript is not None:
                self.transcript.feed(frame)
            await self.resp.write(frame)
        return fits

    async def close(self) -> None:
        """The end of a complete answer: what the filters still hold, the client dialect's
        closing events."""
        if self.filters is not None:
            tail = await self.filters.close()
            if tail and self.reshape is not None:
                tail = self.reshape.feed(tail)
            if tail:
                await self.write_out(tail)
        if self.reshape is not None:
            end = self.reshape.end()
            if end:
                await self.write_out(end)

    async def run(
        self,
        gw: Gateway,
        ex: Exchange,
        frames: AsyncGenerator[bytes, None],
        first: bytes | None,
        drained: bool = False,
    ) -> UpstreamError | _Cut | _Blocked | None:
        """Relay one try's frames: None when its answer is complete, ``CUT`` at the limit,
        ``BLOCKED`` when a filter ended it, or the failure that ended it. ``drained``: the
        upstream has sent all it will with ``first`` (``Upstream.drained``), so the rest of
        ``frames`` reads nothing and runs without the idle timer and its watchdog (an answer
        that arrived in one read, as short ones do: 22k instructions less per stream in
        ``bench/cpu_probe.py --valgrind``)."""
        route = ex.route
        assert route is not None
        idle = route.timeouts.idle
        loop = gw.loop or asyncio.get_running_loop()
        plain = self.plain
        write = self.resp.write
        try:
            if first is not None:
                sent = self.sent + len(first)
                if plain and sent <= self.limit:  # the usual case, as in the loop below
                    self.sent = sent
                    await write(first)
                elif not await self.write(first):
                    return self._stopped()
            if not self.sent:  # nothing of the first frame went out: the headers go alone
                await self.resp.write(b"")
            if drained:
                async for frame in frames:  # closing frames at most: nothing to wait for
                    if not await self.write(frame):
                        return self._stopped()
                return None
            with dispatch.TryTimer(None, loop) as tm:
                dog = _Watchdog(loop, tm, idle, lambda: dispatch.time_left(gw, ex, idle))
                try:
                    async for frame in frames:
                        dog.writing = True  # the client's reading time is not upstream idle time
                        sent = self.sent + len(frame)
                        if plain and sent <= self.limit:  # the usual case, without a detour
                            self.sent = sent
                            await write(frame)
                        elif not await self.write(frame):
                            return self._stopped()
                        dog.writing = False
                        dog.last = loop.time()
                finally:
                    dog.stop()
        except TimeoutError:
            backend = ex.backend.name if ex.backend is not None else "?"
            return errors.UpstreamTimeout(
                f"Backend '{backend}' stalled mid-stream (no event within {idle:g}s) or the "
                f"request exceeded its total timeout of {route.timeouts.total:g}s.",
                backend=backend,
            )
        except UpstreamError as err:
            return err
        finally:
            await frames.aclose()
        return None

    def _stopped(self) -> _Cut | _Blocked:
        return BLOCKED if self.filters is not None and self.filters.blocked else CUT


class _Watchdog:
    """The idle and total bound of a relay, checked by one timer instead of rescheduling a
    timeout for every frame: it expires ``tm`` once no frame came for ``idle`` seconds (time
    spent writing to the client does not count) or ``left()`` (the request's time) ran out."""

    __slots__ = ("_handle", "_idle", "_left", "_loop", "_tm", "last", "writing")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tm: dispatch.TryTimer,
        idle: float,
        left: Callable[[], float],
    ) -> None:
        self._loop = loop
        self._tm = tm
        self._idle = idle
        self._left = left
        self.last = loop.time()
        self.writing = False
        self._handle = loop.call_at(self.last + min(idle, left()), self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self.writing:
            self._handle = self._loop.call_at(now + self._idle, self._check)
            return
        left = self._left()
        due = min(self.last + self._idle, now + left)
        if left <= 0 or now >= due:
            self._tm.expire()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def stop(self) -> None:
        self._handle.cancel()


async def serve(  # noqa: PLR0915 - the commit-to-end loop reads best in one piece
    gw: Gateway, request: web.Request, ex: Exchange, stages: Stages
) -> web.StreamResponse:
    """Answer ``ex`` (a chat request with ``stream: true``) as a stream, through the filters of
    ``stages`` (those of the request's config, ``Stages.live``)."""
    up, frames, first, tr = await dispatch.with_retries(
        gw, ex, lambda call, tr: try_stream(gw, ex, call, tr)
    )
    route = ex.route
    assert route is not None
    ex.ttft = gw.clock.now() - ex.started
    ex.status = 200
    resp = _EventStream(headers={**metering.headers(ex), **_SSE_HEADERS})
    relay = _Relay(
        resp,
        ex.limits.max_stream_bytes,
        _transcript(ex),
        _filters(stages, ex, tr),
        tr.reshape.stream() if tr.reshape is not None else None,
    )
    earlier: list[Usage] = []  # settled tries before a continuation
    #: The stream's last events: they go out with its end, in one write.
    last = b""
    try:
        await resp.prepare(request)
        ex.committed = True
        done = ex.client.done
        while True:
            end = await relay.run(gw, ex, frames, first, up.drained)
            if end is None:
                await relay.close()
                last = done
                up.release()
                break
            up.close()
            if isinstance(end, _Blocked):
                ex.annotations["outputBlocked"] = True
                await relay.close()
                last = done
                break
            if isinstance(end, _Cut):
                ex.outcome = "truncated"
                ex.annotations["truncatedAtBytes"] = relay.sent
                last = _length_stop(gw, ex, relay, up) + done
                break
            ex.outcome = "stream_error"
            ex.error = end
            dispatch.book_failure(gw, ex, end, retry_after=None, mid_stream=True)
            used = _usage(ex, up)
            resumed = await _resume(gw, ex, relay, end, total_usage([*earlier, used]))
            if isinstance(resumed, UpstreamError):
                ex.error = resumed
                last = ex.client.stream_error(resumed)
                break
            earlier.append(used)
            up, frames, first, _ = resumed
            ex.outcome = "ok"
            ex.error = None
    except ConnectionError:
        up.close()
        ex.outcome = "client_disconnected"
    except BaseException:
        up.close()
        raise
    finally:
        ex.usage = total_usage([*earlier, _usage(ex, up)])
    try:
        await resp.write_eof(last)
    except ConnectionError:
        ex.outcome = "client_disconnected"
    return resp


def _filters(stages: Stages, ex: Exchange, tr: Translator) -> ChunkFilters | None:
    """The stages' filters over this stream, or None when no stage filters it (or the answer
    is not in the canonical shape)."""
    if not stages.streams or not tr.canonical:
        return None
    first = stages.filters(ex)
    if not first:
        return None
    return ChunkFilters(lambda: stages.filters(ex), first)


def _transcript(ex: Exchange) -> continuation.Transcript | None:
    """A transcript when a failed stream may be continued (OpenAI clients, one choice)."""
    route = ex.route
    if route is None or route.mid_stream_failure is not MidStreamFailure.CONTINUE:
        return None
    if ex.client.name != "openai" or ex.body.get("n") not in (None, 1):
        return None
    return continuation.Transcript()


async def _resume(
    gw: Gateway,
    ex: Exchange,
    relay: _Relay,
    err: UpstreamError,
    before: Usage,
) -> Opened | UpstreamError:
    """The next try of a stream that failed after its commit point, opened and at its first
    frame; or the failure that ends the stream (``err`` when it cannot be continued)."""
    transcript = relay.transcript
    failed = ex.backend
    if transcript is None or not transcript.resumable or failed is None:
        return err
    decision = dispatch.next_try(gw, ex, err)
    if isinstance(decision, routing.GiveUp):
        return err
    partial, produced, cap = transcript.text, transcript.chunks, ex.output_cap

    def attempt(call: Call, tr: Translator) -> Awaitable[Opened]:
        call.body = continuation.resume_body(ex.body, partial, call.backend.provider, produced, cap)
        call.native = None
        return try_stream(gw, ex, call, tr)

    try:
        opened = await dispatch.with_retries(
            gw, ex, attempt, resume=(failed, decision, err.failure)
        )
    except UpstreamError as exc:
        return exc
    ex.annotations["continued"] = ex.annotations.get("continued", 0) + 1
    relay.splicer = continuation.Splicer(transcript, before)
    return opened


def _length_stop(gw: Gateway, ex: Exchange, relay: _Relay, up: Upstream) -> bytes:
    """The frames that end a stream cut at the limit, as if it had reached its token limit."""
    t = relay.transcript
    backend = ex.backend.model if ex.backend is not None else ""
    chunk = (
        (t.id if t is not None and t.id else None) or f"chatcmpl-{ex.request_id}",
        int(gw.clock.wall()),
        (t.model if t is not None and t.model else None) or backend,
        _choices(ex),
    )
    return ex.client.length_stop(_usage(ex, up).output_tokens, chunk)


def _choices(ex: Exchange) -> int:
    n = ex.body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _usage(ex: Exchange, up: Upstream) -> Usage:
    """What one try used: as reported when it completed; otherwise estimated (the provider's
    partial report, or prompt characters / 4 and one token per content chunk), with the output
    capped at the request's ``max_tokens`` (for every choice)."""
    u = up.usage
    if u is not None and up.complete:
        return u
    if up.usage_invalid:
        ex.annotations["usageInvalid"] = True
    prompt = (
        u.input_tokens
        if u is not None
        else validate.estimate_tokens(validate.prompt_chars(ex.body))
    )
    produced = max(u.output_tokens if u is not None else 0, up.content_chunks)
    if ex.output_cap:
        produced = min(produced, ex.output_cap * _choices(ex))
    cached = u.cached_input_tokens if u is not None else 0
    return Usage(prompt, produced, cached, source="estimated")
