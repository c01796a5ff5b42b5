#!/usr/bin/env python3
"""Per-event CPU of the sidecar's stream translation, in process, on one core.

For each stream shape it feeds N identical provider events (one text delta each) through the
stream decoder of the translator the request path uses, and prints microseconds per event (the
best of five runs):

* ``openai relay``       OpenAI chunks checked and passed on (``openai_openai``, the baseline);
* ``anthropic→openai``   Anthropic ``content_block_delta`` events → OpenAI chunks;
* ``gemini→openai``      Gemini ``streamGenerateContent`` events → OpenAI chunks;
* ``openai→anthropic``   OpenAI chunks → Anthropic events (``POST /v1/messages`` on a
  non-Anthropic backend).

Run:  python bench/translate_bench.py [--events 20000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from sluice_sidecar import sse
from sluice_sidecar.contract import Backend, Route
from sluice_sidecar.translate import Call, StreamDecoder, anthropic_openai
from sluice_sidecar.translate import openai_anthropic as anthropic
from sluice_sidecar.translate import openai_gemini as gemini
from sluice_sidecar.translate import openai_openai as openai

OPENAI = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    b'[{"index":0,"delta":{"content":" hello"},"finish_reason":null}]}\n\n'
)
ANTHROPIC = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":" hello"}}\n\n'
)
GEMINI = (
    b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":" hello"}]},"index":0}],'
    b'"usageMetadata":{"promptTokenCount":9,"totalTokenCount":9},"modelVersion":"g",'
    b'"responseId":"r"}\r\n\r\n'
)


def measure(event: bytes, n: int, decoder: Callable[[], StreamDecoder], runs: int = 5) -> float:
    """Best of ``runs`` (the machine may be shared): microseconds per event."""
    best = float("inf")
    for _ in range(runs):
        d = decoder()
        out: list[bytes] = []
        start = time.perf_counter()
        for _ in range(n):
            d.feed(event, out)
            out.clear()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def measure_reshape(n: int, runs: int = 5) -> float:
    """OpenAI chunks → Anthropic events (``/v1/messages`` over a non-Anthropic backend)."""
    best = float("inf")
    for _ in range(runs):
        r = anthropic_openai.RESHAPE.stream()
        r.feed(OPENAI)
        start = time.perf_counter()
        for _ in range(n):
            r.feed(OPENAI)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20000)
    n = p.parse_args().events
    backend = Backend(name="b", provider="openai-compatible", model="m", base_url="http://x")
    call = Call(
        "chat",
        Route(name="r", source="r", backends=(backend,)),
        backend,
        {},
        True,
        False,
        None,
        "id",
    )

    def anthropic_decoder() -> StreamDecoder:
        a = anthropic.StreamTranslator("b", 1, False)
        start = {"type": "message_start", "message": {"id": "m", "model": "c"}}
        a.event(sse.Event(json.dumps(start), "message_start"))
        return a

    rows = [
        ("openai relay", measure(OPENAI, n, lambda: openai.OpenAIStream(call))),
        ("anthropic→openai", measure(ANTHROPIC, n, anthropic_decoder)),
        ("gemini→openai", measure(GEMINI, n, lambda: gemini.StreamTranslator("b", 1, "g", False))),
        ("openai→anthropic", measure_reshape(n)),
    ]
    for name, us in rows:
        print(f"{name:20s} {us:6.2f} µs/event")


if __name__ == "__main__":
    main()
