"""The built-in ``mock`` provider: deterministic OpenAI-shaped answers without any network.

Owns the behaviour described by ``MockBehaviour``: a fixed latency (slept on the injected clock;
for streams it is the time to the first token), a failure rate (a 503 drawn from the injected
random generator), and a reply of ``completionTokens`` tokens (``reply`` if given, else a fixed
sentence) streamed one token per chunk. Prompt tokens are estimated from the prompt's characters.
Embeddings are a deterministic 8-dimensional vector derived from each input's hash.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import AsyncGenerator
from typing import Any

from .. import errors, sse, validate
from ..clock import Clock
from ..contract import MockBehaviour
from ..model import Usage
from ..translate import BackendDialect, Call
from .base import Upstream

_WORDS = (
    "This",
    "is",
    "a",
    "mock",
    "answer",
    "from",
    "Sluice.",
    "It",
    "is",
    "deterministic,",
    "costs",
    "nothing",
    "and",
    "needs",
    "no",
    "network,",
    "so",
    "demos",
    "and",
    "tests",
    "can",
    "run",
    "anywhere.",
)
_DEFAULT = MockBehaviour()


def reply_tokens(behaviour: MockBehaviour) -> list[str]:
    """The reply as tokens (words with their leading space). A pure function."""
    words = behaviour.reply.split() if behaviour.reply else _WORDS
    n = behaviour.completion_tokens if not behaviour.reply else len(words)
    n = max(1, n)
    return [(" " if i else "") + words[i % len(words)] for i in range(n)]


def embedding(text: Any) -> list[float]:
    digest = hashlib.sha256(json.dumps(text).encode()).digest()
    return [round((b - 128) / 128, 4) for b in digest[:8]]


class MockTransport:
    """The ``mock`` provider's transport: answers in the canonical (OpenAI) shape, whatever the
    dialect, without any network."""

    def __init__(self, clock: Clock, rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng

    async def open(self, call: Call, dialect: BackendDialect) -> Upstream:
        b = call.backend.mock or _DEFAULT
        if b.latency_ms > 0:
            await self._clock.sleep(b.latency_ms / 1000.0)
        if b.failure_rate > 0 and self._rng.random() < b.failure_rate:
            raise errors.UpstreamStatusError(
                503,
                f"Backend '{call.backend.name}': mock failure (failureRate {b.failure_rate})",
                backend=call.backend.name,
            )
        return MockUpstream(call, b, self._clock.wall())


class MockUpstream(Upstream):
    def __init__(self, call: Call, behaviour: MockBehaviour, now: float) -> None:
        self._call = call
        self._behaviour = behaviour
        self._created = int(now)
        self._id = f"chatcmpl-mock-{call.request_id}"
        prompt = validate.estimate_tokens(validate.prompt_chars(call.body))
        self._prompt_tokens = max(1, prompt)

    async def read(self) -> bytes:
        call = self._call
        if call.operation == "embeddings":
            inputs = call.body.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            self.usage = Usage(self._prompt_tokens, 0)
            body: dict[str, Any] = {
                "object": "list",
                "model": call.backend.model,
                "data": [
                    {"object": "embedding", "index": i, "embedding": embedding(x)}
                    for i, x in enumerate(items)
                ],
                "usage": {
                    "prompt_tokens": self._prompt_tokens,
                    "total_tokens": self._prompt_tokens,
                },
            }
        else:
            tokens = reply_tokens(self._behaviour)
            self.usage = Usage(self._prompt_tokens, len(tokens))
            body = {
                "id": self._id,
                "object": "chat.completion",
                "created": self._created,
                "model": call.backend.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(tokens)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage_obj(len(tokens)),
            }
        self.complete = True
        return json.dumps(body, separators=(",", ":")).encode()

    async def frames(self) -> AsyncGenerator[bytes, None]:
        tokens = reply_tokens(self._behaviour)
        head = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._call.backend.model,
        }
        for i, token in enumerate(tokens):
            delta = {"role": "assistant", "content": token} if i == 0 else {"content": token}
            self.content_chunks += 1
            yield self._frame(head, [{"index": 0, "delta": delta, "finish_reason": None}])
        self.complete = True
        self.usage = Usage(self._prompt_tokens, len(tokens))
        yield self._frame(head, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if self._call.client_wants_usage:
            yield self._frame(head, [], usage=self._usage_obj(len(tokens)))

    def _usage_obj(self, completion: int) -> dict[str, int]:
        return {
            "prompt_tokens": self._prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self._prompt_tokens + completion,
        }

    @staticmethod
    def _frame(
        head: dict[str, Any], choices: list[Any], usage: dict[str, int] | None = None
    ) -> bytes:
        obj = dict(head, choices=choices)
        if usage is not None:
            obj["usage"] = usage
        return sse.encode_data(json.dumps(obj, separators=(",", ":")).encode())

    def close(self) -> None:
        pass
