#!/usr/bin/env python3
"""Per-event CPU of the sidecar's stream translation, in process, on one core.

For each stream shape it feeds N identical provider events (one text delta each) through the
sidecar's SSE parser and the translator the pipeline uses, and prints microseconds per event
(the best of five runs):

* ``openai relay``       OpenAI chunks parsed and re-emitted as they are (the baseline);
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

from sluice_sidecar import inbound_anthropic, sse
from sluice_sidecar.providers import anthropic, gemini

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


def measure(event: bytes, n: int, handle: Callable[[sse.Event], object], runs: int = 5) -> float:
    """Best of ``runs`` (the machine may be shared): microseconds per event."""
    best = float("inf")
    for _ in range(runs):
        parser = sse.Parser()
        start = time.perf_counter()
        for _ in range(n):
            for ev in parser.feed(event):
                handle(ev)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20000)
    n = p.parse_args().events

    def relay(ev: sse.Event) -> object:
        json.loads(ev.data)
        return sse.encode_data(ev.data.encode())

    a = anthropic.StreamTranslator("b", 1, False)
    a.feed("message_start", {"type": "message_start", "message": {"id": "m", "model": "c"}})
    g = gemini.StreamTranslator("b", 1, "g", False)
    w = inbound_anthropic.EventWriter()
    w.feed({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": ""}}]})
    rows = [
        ("openai relay", measure(OPENAI, n, relay)),
        (
            "anthropic→openai",
            measure(ANTHROPIC, n, lambda ev: a.feed(ev.event, json.loads(ev.data))),
        ),
        ("gemini→openai", measure(GEMINI, n, lambda ev: g.feed(json.loads(ev.data)))),
        ("openai→anthropic", measure(OPENAI, n, lambda ev: w.feed(json.loads(ev.data)))),
    ]
    for name, us in rows:
        print(f"{name:20s} {us:6.2f} µs/event")


if __name__ == "__main__":
    main()
