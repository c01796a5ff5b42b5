"""The ``external`` check: a classifier service of the user's, called over HTTP with a deadline.

Owns the wire contract and the call; the only IO module of the package. The contract (also in
docs/guardrailpolicy.md), one POST per policy and request:

    POST <url>                       Content-Type: application/json
    {"policy": "support-filters", "stage": "input", "texts": ["…", "…"]}

    200, application/json
    {"flagged": false}
    {"flagged": true, "categories": ["self-harm"], "score": 0.97}

``stage`` is ``input`` or ``output``; ``texts`` are the texts the checks read: for input the
messages as they will go to the provider (after redaction); for output the answer's content and
each tool call's arguments as the app will get them (after redaction, before any ``restore``
put the app's originals back), and for a stream each streamed text whole when it ends.
``flagged`` (a boolean) is required; ``categories`` (strings) and ``score`` (a number) are
optional and recorded. Anything else — no connection, no answer within ``timeout``, a status
other than 200, a body that is not such an object, or more than 64 KiB — counts as the service
being down, and ``failureMode`` decides: ``Closed`` blocks, ``Open`` lets the request or answer
through and records the failure. Never raises for the service's faults.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

from ..contract import ExternalCheck

MAX_ANSWER_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Classified:
    """What the service said."""

    flagged: bool
    categories: tuple[str, ...] = ()
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Down:
    """Why there is no answer: ``connect``, ``timeout``, ``status`` or ``garbage``."""

    reason: str


def parse(status: int, raw: bytes) -> Classified | Down:
    """The service's answer, or why it is not one. Pure."""
    if status != 200:
        return Down("status")
    if len(raw) > MAX_ANSWER_BYTES:
        return Down("garbage")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return Down("garbage")
    if not isinstance(obj, dict) or not isinstance(obj.get("flagged"), bool):
        return Down("garbage")
    cats = obj.get("categories", [])
    if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
        return Down("garbage")
    score = obj.get("score")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score)
    ):
        return Down("garbage")
    return Classified(obj["flagged"], tuple(c[:64] for c in cats[:16]), score)


async def classify(
    check: ExternalCheck, policy: str, stage: str, texts: Sequence[str]
) -> Classified | Down:
    """Ask the service at ``check.url``, waiting at most ``check.timeout`` seconds in all."""
    payload = {"policy": policy, "stage": stage, "texts": list(texts)}
    try:
        async with asyncio.timeout(check.timeout):
            async with (
                aiohttp.ClientSession() as session,
                session.post(check.url, json=payload, allow_redirects=False) as resp,
            ):
                if resp.status != 200:
                    return Down("status")
                raw = bytearray()
                async for piece in resp.content.iter_chunked(16384):
                    raw += piece
                    if len(raw) > MAX_ANSWER_BYTES:
                        return Down("garbage")
                return parse(resp.status, bytes(raw))
    except TimeoutError:
        return Down("timeout")
    except (aiohttp.ClientError, OSError, ValueError):
        return Down("connect")
