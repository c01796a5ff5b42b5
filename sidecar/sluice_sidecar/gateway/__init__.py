"""The request path: everything between a client's bytes and a backend's answer, in one package.

Read it top to bottom in this order:

1. ``handle.handle`` — one request: read the body (``body``), parse it in the client's API,
   resolve the route, run the stages' ``on_request``, dispatch, respond, finish.
2. ``dispatch.with_retries`` — the try loop: the backend ``routing`` picks, its translator
   (``Gateway.translator``) and call (``Gateway.make_call``), one try, and on failure
   ``dispatch.book_failure`` (the one place a failed try is booked) and ``dispatch.next_try``.
3. ``handle.try_unary`` / ``stream.try_stream`` — one try through the one HTTP adapter
   (``upstream.http``): a whole answer, or a stream up to its first frame.
4. ``handle._unary`` — a whole answer: the stages' ``on_response``, reshaped for the client.
5. ``stream.serve`` — a stream: the commit point, the relay through its steps (continuation
   splice, the stages' filters in ``filtering``, the client reshape, the output limit),
   mid-stream failures and ``continuation``.
6. ``state.Gateway.finish`` — metrics, the stages' ``on_finish``, the audit record and spans.

``state`` holds the live state (config snapshot, routing state, transports). Nothing below this
package imports it; it imports the stages only through ``stage.Stage``.
"""

from __future__ import annotations

from .handle import handle
from .state import GATEWAY, Gateway, Snapshot, snapshot_of

__all__ = ["GATEWAY", "Gateway", "Snapshot", "handle", "snapshot_of"]
