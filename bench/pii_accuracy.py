#!/usr/bin/env python3
"""PII detection accuracy: Sluice's detectors side by side with Microsoft Presidio's analyzer.

Builds the corpus of ``pii_corpus`` (faker values of several locales in sentences and log
lines, plus hard negatives), runs ``sluice_sidecar.guardrails.detectors.Scanner`` (every kind)
and Presidio's ``AnalyzerEngine`` on the same texts and prints precision, recall and F1 per
entity and overall.

Matching is span level: a detection is a true positive when it overlaps a gold span of the same
entity, else a false positive; a gold span is found when some detection of its entity overlaps
it, else it is a false negative. ``exact`` is the share of gold spans that some detection of the
same entity covers with exactly the gold boundaries. Overall figures are micro-averaged over
the entities both tools detect (API_KEY, which Presidio has no recognizer for, is reported on
its own row and left out of the comparison).

Presidio runs offline: a blank spaCy ``en`` pipeline (``spacy.blank("en")``: tokenizer only, no
model download; so no NER, which this corpus does not label anyway) behind its
``SpacyNlpEngine``, the default recognizer registry (pattern, checksum and ``phonenumbers``
recognizers, context enhancement on), ``language="en"`` for every text, and ``tldextract``
held to its bundled suffix list (its email validator otherwise fetches the list at run time).
Two phone settings are measured: Presidio's default regions, and the regions of the corpus's
locales (fairer: Presidio cannot find a number of a region it is not asked about). Results are
counted at Presidio's default score threshold (0) and at 0.4, its best single threshold on this
corpus (it keeps phone numbers, scored 0.4 when no context word raises them, and drops the
"very weak" SSN patterns scored 0.05; at 0.5 every phone number is lost). Presidio's entity
names map as EMAIL_ADDRESS→EMAIL, PHONE_NUMBER→PHONE, IBAN_CODE→IBAN, and CREDIT_CARD,
US_SSN, IP_ADDRESS as they are; its other entities (URL, DATE_TIME, ...) are not counted.

Run:  pip install -r bench/requirements-pii.txt
      python bench/pii_accuracy.py [--docs N] [--seed S] [--markdown] [--no-presidio] [--errors E]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from pii_corpus import ENTITIES, LOCALES, Doc, build

from sluice_sidecar.guardrails.detectors import Scanner

Span3 = tuple[int, int, str]
Detect = Callable[[str], list[tuple[int, int, str, float]]]

PRESIDIO_MAP = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IBAN_CODE": "IBAN",
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
}
COMPARED = tuple(e for e in ENTITIES if e != "API_KEY")
#: Faker locale → phonenumbers region.
REGIONS = {"en_US": "US", "en_GB": "GB", "pt_PT": "PT", "de_AT": "AT", "pl_PL": "PL"}


def sluice() -> Detect:
    scanner = Scanner(ENTITIES)

    def run(text: str) -> list[tuple[int, int, str, float]]:
        return [(s.start, s.end, s.entity, 1.0) for s in scanner.find(text)]

    return run


def presidio(regions: Iterable[str] | None) -> Detect:
    """Presidio's analyzer, offline (see the module docstring for the configuration)."""
    import spacy
    import tldextract
    import tldextract.tldextract as tx
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    tx.TLD_EXTRACTOR = offline
    tldextract.extract = offline  # what the email recognizer calls

    class BlankSpacy(SpacyNlpEngine):  # type: ignore[misc]
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankSpacy(models=[{"lang_code": "en", "model_name": "blank:en"}])
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    if regions is not None:
        registry.remove_recognizer("PhoneRecognizer")
        registry.add_recognizer(PhoneRecognizer(supported_regions=tuple(regions)))
    analyzer = AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])

    def run(text: str) -> list[tuple[int, int, str, float]]:
        out = []
        for r in analyzer.analyze(text, language="en"):
            entity = PRESIDIO_MAP.get(r.entity_type)
            if entity is not None:
                out.append((r.start, r.end, entity, float(r.score)))
        return out

    return run


class Tally:
    """Per-entity counts of one tool on the corpus."""

    def __init__(self) -> None:
        self.tp: dict[str, int] = defaultdict(int)
        self.fp: dict[str, int] = defaultdict(int)
        self.fn: dict[str, int] = defaultdict(int)
        self.exact: dict[str, int] = defaultdict(int)
        self.found: dict[str, int] = defaultdict(int)
        self.errors: list[tuple[str, str, str]] = []  # (kind, entity, snippet)

    def add(self, doc: Doc, found: list[Span3]) -> None:
        for s, e, ent in found:
            if any(ent == g and s < ge and gs < e for gs, ge, g in doc.gold):
                self.tp[ent] += 1
            else:
                self.fp[ent] += 1
                self.errors.append(("FP", ent, _snippet(doc.text, s, e)))
        for gs, ge, g in doc.gold:
            if any(ent == g and s < ge and gs < e for s, e, ent in found):
                self.found[g] += 1
                if any(ent == g and (s, e) == (gs, ge) for s, e, ent in found):
                    self.exact[g] += 1
            else:
                self.fn[g] += 1
                self.errors.append(("FN", g, _snippet(doc.text, gs, ge)))

    def prf(self, entities: Iterable[str]) -> tuple[float, float, float, int, int, int]:
        ents = list(entities)
        tp = sum(self.tp[e] for e in ents)
        fp = sum(self.fp[e] for e in ents)
        fn = sum(self.fn[e] for e in ents)
        p = tp / (tp + fp) if tp + fp else 1.0
        found = sum(self.found[e] for e in ents)
        r = found / (found + fn) if found + fn else 1.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return p, r, f1, tp, fp, fn


def _snippet(text: str, s: int, e: int) -> str:
    return f"{text[max(0, s - 25) : s]}[[{text[s:e]}]]{text[e : e + 15]}"


def evaluate(docs: list[Doc], detect: Detect, threshold: float = 0.0) -> tuple[Tally, float]:
    tally = Tally()
    started = time.process_time()
    for doc in docs:
        found = [(s, e, ent) for s, e, ent, score in detect(doc.text) if score >= threshold]
        tally.add(doc, found)
    return tally, time.process_time() - started


def _f(x: float) -> str:
    return f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--docs", type=int, default=300, help="messages per locale")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--markdown", action="store_true", help="print the docs tables")
    ap.add_argument("--no-presidio", action="store_true", help="Sluice only (no bench deps)")
    ap.add_argument("--errors", type=int, default=0, help="print up to N misses per tool")
    args = ap.parse_args()

    docs = build(args.seed, args.docs)
    gold: dict[str, int] = defaultdict(int)
    for doc in docs:
        for _, _, g in doc.gold:
            gold[g] += 1
    kb = sum(len(d.text.encode()) for d in docs) / 1024
    negatives = sum(not d.gold for d in docs)
    print(
        f"corpus: {len(docs)} messages ({negatives} with no personal data), {kb:.0f} KB, "
        f"locales {', '.join(LOCALES)}, seed {args.seed}"
    )
    print("gold spans: " + ", ".join(f"{e} {gold[e]}" for e in ENTITIES))

    tools: list[tuple[str, Detect, float]] = [("Sluice", sluice(), 0.0)]
    if not args.no_presidio:
        version = importlib.metadata.version("presidio-analyzer")
        print(
            f"presidio-analyzer {version}, spacy {importlib.metadata.version('spacy')} "
            f"(blank en), phonenumbers {importlib.metadata.version('phonenumbers')}"
        )
        regions = sorted({REGIONS.get(loc, loc[3:]) for loc in LOCALES})
        default = presidio(None)
        tuned = presidio(regions)
        tools += [
            ("Presidio (default regions, score ≥ 0)", default, 0.0),
            ("Presidio (corpus regions, score ≥ 0)", tuned, 0.0),
            ("Presidio (corpus regions, score ≥ 0.4)", tuned, 0.4),
        ]

    results: list[tuple[str, Tally, float]] = []
    for name, detect, threshold in tools:
        tally, cpu = evaluate(docs, detect, threshold)
        results.append((name, tally, cpu))

    if args.markdown:
        head = "| entity | gold |" + "".join(f" {n} P / R / F1 |" for n, _, _ in results)
        print("\n" + head + "\n|---|---|" + "---|" * len(results))
        for ent in (*COMPARED, "API_KEY"):
            row = f"| {ent} | {gold[ent]} |"
            for name, tally, _ in results:
                if ent == "API_KEY" and name != "Sluice":
                    row += " (no recognizer) |"
                    continue
                p, r, f1, *_ = tally.prf([ent])
                row += f" {_f(p)} / {_f(r)} / {_f(f1)} |"
            print(row)
        row = f"| **overall** (without API_KEY) | {sum(gold[e] for e in COMPARED)} |"
        for _, tally, _ in results:
            p, r, f1, *_ = tally.prf(COMPARED)
            row += f" {_f(p)} / {_f(r)} / **{_f(f1)}** |"
        print(row)
        row = "| exact boundaries (share of gold) | |"
        for _, tally, _ in results:
            ex = sum(tally.exact[e] for e in COMPARED) / max(1, sum(gold[e] for e in COMPARED))
            row += f" {_f(ex)} |"
        print(row)
        row = "| CPU ms per KB | |"
        for _, _, cpu in results:
            row += f" {cpu * 1000 / kb:.3f} |"
        print(row)
    else:
        for name, tally, cpu in results:
            print(f"\n{name}: {cpu * 1000 / kb:.3f} ms CPU per KB")
            print(f"  {'entity':<12} {'P':>6} {'R':>6} {'F1':>6}   tp   fp   fn exact")
            for ent in (*COMPARED, "API_KEY", "overall"):
                ents = COMPARED if ent == "overall" else [ent]
                p, r, f1, tp, fp, fn = tally.prf(ents)
                exact = sum(tally.exact[e] for e in ents)
                print(
                    f"  {ent:<12} {_f(p):>6} {_f(r):>6} {_f(f1):>6} {tp:>4} {fp:>4} {fn:>4} "
                    f"{exact:>5}"
                )
    if args.errors:
        for name, tally, _ in results:
            print(f"\n{name}: first {args.errors} errors per kind and entity")
            seen: dict[tuple[str, str], int] = defaultdict(int)
            for kind, ent, snippet in tally.errors:
                if seen[kind, ent] < args.errors:
                    seen[kind, ent] += 1
                    print(f"  {kind} {ent:<11} {snippet!r}")


if __name__ == "__main__":
    main()
