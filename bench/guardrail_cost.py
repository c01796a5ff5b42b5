#!/usr/bin/env python3
"""CPU cost of the guardrails per KB of text: input check, unary output check, streamed output.

The issue's target: guardrails add at most 0.2 ms (p50) per KB of text on one core. Measured
with ``time.process_time`` (CPU time of this process, so other load on the machine matters
less than with wall time) through the sidecar's own entry points on one GuardrailPolicy that
redacts every PII kind on input and output: ``Engine.check_input`` on a chat body,
``Engine.check_output`` on an answer, and ``Engine.output_filter`` (the holdback redactor) fed
the answer in deltas of four characters (about one token, as a model streams) and of 32
(cut before the clock starts: a sidecar gets its deltas from the upstream's events).

Texts are about 4 KB: ``prose`` (faker English paragraphs, no personal data), ``chat`` (prose
with a ``pii_corpus`` message carrying personal data every ~600 bytes), ``pii`` (only such
messages: an entity every ~80 bytes) and ``negatives`` (its messages without personal data:
order numbers, timestamps, hashes, versions, addresses — digit-heavy text the validators must
reject). Each call gets a text it has not seen (the policy engine caches results per text).

Reported: per run the median over the texts, then the median of the runs and their spread
(min-max). ``scanner`` is ``Scanner.find`` alone, ``holdback, null scanner`` the streaming
redactor with a scanner that finds nothing (its own per-event cost); ``injection`` (the
prompt-injection scorer, ``guardrails/injection.py``, not in the policy above) on its own.

Run:  pip install -r bench/requirements-pii.txt
      python bench/guardrail_cost.py [--runs R] [--texts N] [--markdown] [--profile CASE]
      python bench/guardrail_cost.py --mypyc guardrails/detectors.py ...  # those compiled
      python bench/guardrail_cost.py --ref REF ...   # the sidecar as committed at REF (a
                                                     # baseline to alternate runs with)
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faker import Faker
from pii_corpus import ENTITIES, build

from sluice_sidecar.contract import GuardAction, Guardrail, GuardStage, InjectionRule, PiiRule
from sluice_sidecar.guardrails import Engine, HoldbackRedactor, Scanner
from sluice_sidecar.guardrails.injection import score

TARGET_BYTES = 4096
DELTA = 4


def texts(kind: str, count: int, seed: int) -> list[str]:
    """``count`` distinct texts of about TARGET_BYTES each."""
    if kind == "prose":
        f = Faker("en_US")
        f.seed_instance(seed)
        out = []
        for _ in range(count):
            t = ""
            while len(t.encode()) < TARGET_BYTES:
                t += f.paragraph(nb_sentences=6) + "\n\n"
            out.append(t)
        return out
    docs = [d for d in build(seed, max(60, count * 12)) if bool(d.gold) == (kind != "negatives")]
    f = Faker("en_US")
    f.seed_instance(seed)
    out, t, i = [], "", 0
    while len(out) < count:
        if kind == "chat":  # a message with personal data in every ~600 bytes of prose
            t += f.paragraph(nb_sentences=5) + " "
        t += docs[i % len(docs)].text + "\n"
        i += 1
        if len(t.encode()) >= TARGET_BYTES:
            out.append(t)
            t = ""
    return out


def policy() -> Guardrail:
    pii = PiiRule(entities=ENTITIES, action=GuardAction.REDACT)
    return Guardrail.model_validate(
        {
            "name": "pii",
            "input": GuardStage(pii=pii).model_dump(),
            "output": GuardStage(pii=pii).model_dump(),
        }
    )


def policy_with_injection() -> Guardrail:
    """``policy()`` with the prompt-injection check on input too (flagging, so every text is
    checked whole by both): what one policy that does both costs."""
    pii = PiiRule(entities=ENTITIES, action=GuardAction.REDACT)
    injection = InjectionRule(action=GuardAction.LOG)
    stage = GuardStage(pii=pii, prompt_injection=injection).model_dump()
    return Guardrail.model_validate({"name": "pii-and-injection", "input": stage})


_BOTH = Engine([policy_with_injection()])


def _whole(text: str) -> str:
    return text


def _deltas(size: int) -> Callable[[str], list[str]]:
    """The text cut into deltas of ``size`` characters, as a model streams it (cut before the
    clock starts: a sidecar gets its deltas from the upstream's events, it does not slice)."""
    return lambda text: [text[i : i + size] for i in range(0, len(text), size)]


def _input(engine: Engine, text: Any) -> None:
    engine.check_input({"model": "chat", "messages": [{"role": "user", "content": text}]}, "chat")


def _unary(engine: Engine, text: Any) -> None:
    engine.check_output(text, "chat")


def _streamed(engine: Engine, deltas: Any) -> None:
    flt = engine.output_filter("chat")
    assert flt is not None
    for delta in deltas:
        flt.feed(delta)
    flt.finish()


def _holdback_alone(_engine: Engine, deltas: Any) -> None:
    redactor = HoldbackRedactor(_NULL)  # no kinds, no deny patterns: nothing found or held
    for delta in deltas:
        redactor.push(delta)
    redactor.close()


_NULL = Scanner(())
_SCANNER = Scanner(ENTITIES)
#: Per case: what is prepared from a text before the clock starts, and what is timed.
CASES: dict[str, tuple[Callable[[str], Any], Callable[[Engine, Any], None]]] = {
    "input check": (_whole, _input),
    "input check, personal data and injection": (_whole, lambda _e, t: _input(_BOTH, t)),
    "output, unary": (_whole, _unary),
    f"output, streamed ({DELTA}-char deltas)": (_deltas(DELTA), _streamed),
    "output, streamed (32-char deltas)": (_deltas(32), _streamed),
    f"holdback, null scanner ({DELTA}-char deltas)": (_deltas(DELTA), _holdback_alone),
    "scanner": (_whole, lambda _e, t: _SCANNER.find(t) and None),
    "injection": (_whole, lambda _e, t: score(t) and None),
}


def per_kb(case: str, sample: list[str]) -> float:
    """Median CPU ms per KB over ``sample``, on a fresh engine (no cached results)."""
    engine = Engine([policy()])
    prepare, fn = CASES[case]
    got = []
    for text in sample:
        given = prepare(text)
        started = time.process_time()
        fn(engine, given)
        got.append((time.process_time() - started) * 1000 / (len(text.encode()) / 1024))
    return statistics.median(got)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--texts", type=int, default=20, help="texts per run and kind")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--profile", choices=sorted(CASES), help="cProfile one case on chat text")
    ap.add_argument("--ref", help="measure the sidecar as committed at this git ref")
    ap.add_argument(
        "--mypyc",
        nargs="+",
        metavar="MODULE",
        help="measure a copy of the sidecar (the working tree's, or --ref's) with these modules "
        "compiled by mypyc (paths under sluice_sidecar/, e.g. guardrails/holdback.py)",
    )
    args = ap.parse_args()
    if args.ref or args.mypyc:
        sys.exit(_at_ref(args.ref, args.mypyc or []))

    kinds = ("prose", "chat", "pii", "negatives")
    samples = {k: [texts(k, args.texts, seed) for seed in range(args.runs)] for k in kinds}
    # The corpus generator leaves a large heap behind; freeze it so that garbage collections
    # during the measurement do not walk it (a sidecar's heap holds no faker).
    gc.collect()
    gc.freeze()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for sample in samples["chat"]:
            per_kb(args.profile, sample)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return
    for k in kinds:  # warm up: imports, regex compilation, plan building
        per_kb("input check", samples[k][0][:2])
    # Runs outermost, so that a change in the machine's load spreads over every cell.
    got: dict[tuple[str, str], list[float]] = {(c, k): [] for c in CASES for k in kinds}
    for r in range(args.runs):
        for case in CASES:
            for k in kinds:
                try:
                    got[case, k].append(per_kb(case, samples[k][r]))
                except Exception as exc:  # another module's work in progress: go on
                    print(f"{case}: {type(exc).__name__}: {exc}")
                    got[case, k].append(float("nan"))
    rows = [
        (case, [(statistics.median(v), min(v), max(v)) for v in (got[case, k] for k in kinds)])
        for case in CASES
    ]
    size = statistics.mean(len(t.encode()) for t in samples["pii"][0])
    if args.markdown:
        print(f"\nCPU ms per KB (p50 over {args.texts} texts of ~{size / 1024:.1f} KB; median of")
        print(f"{args.runs} runs, min-max in brackets)\n")
        print("| check | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds))
        for case, cells in rows:
            print(
                f"| {case} | "
                + " | ".join(f"{m:.3f} ({lo:.3f}-{hi:.3f})" for m, lo, hi in cells)
                + " |"
            )
    else:
        print(f"CPU ms per KB, p50 over {args.texts} texts of ~{size:.0f} B, {args.runs} runs")
        print(f"{'':<34}" + "".join(f"{k:>22}" for k in kinds))
        for case, cells in rows:
            print(
                f"{case:<34}"
                + "".join(f"{f'{m:.3f} ({lo:.3f}-{hi:.3f})':>22}" for m, lo, hi in cells)
            )


def _at_ref(ref: str | None, mypyc: list[str]) -> int:
    """Run this bench again (same arguments, without ``--ref`` and ``--mypyc``) on a copy of the
    sidecar package: as committed at ``ref`` (the working tree's without), with the ``mypyc``
    modules compiled."""
    from sidecar_bench import compile_with_mypyc, snapshot_sidecar

    with tempfile.TemporaryDirectory(prefix="guardrail-cost-") as work:
        src, what = snapshot_sidecar(Path(work), ref)
        if mypyc:
            what += compile_with_mypyc(src, mypyc)
        print(f"sidecar under test: {what}", flush=True)
        argv, skip = [], False
        for a in sys.argv[1:]:
            if a in ("--ref", "--mypyc"):
                skip = True
            elif a.startswith("--"):
                skip = False
            if not skip and not a.startswith(("--ref=", "--mypyc=")):
                argv.append(a)
        path = os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, PYTHONPATH=path)
        return subprocess.run([sys.executable, __file__, *argv], env=env, check=False).returncode


if __name__ == "__main__":
    main()
