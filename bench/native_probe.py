#!/usr/bin/env python3
"""What the guardrails' text scanning would cost in native code: Python's ``re`` against two Rust
regex engines, on the sidecar's own patterns and texts.

Issue #10's cost target (≤ 0.2 ms per KB) is out of reach for streamed text with personal data
and for text that is nothing but personal data (see "Cost" in docs/benchmarks.md): what is left
is the regex engine's attempts and the Python around each batch and candidate. Before anyone
moves the scanners to Rust, this measures what that move would buy, with a throwaway extension
module (``bench/native_probe/``, PyO3, built here with maturin into a temporary folder; nothing
is installed into the environment and the sidecar does not change):

* the cost of a call from Python into Rust with a str (a 4-character delta, a 4 KB text);
* each built-in detector's pattern (``guardrails/detectors.py``) under Python's ``re`` and under
  fancy-regex (a backtracking engine with look-around and back-references, so the patterns port
  as they are; the spans are checked equal on ASCII texts, where bytes are characters);
* patterns without look-around, the kind a native scanner would search with before checking
  boundaries and checksums in code, under ``re`` and under the regex crate (finite automata).

Nanoseconds per character over the texts of ``guardrail_cost.py`` (prose, chat, pii,
negatives; ~4 KB each): per pattern and kind, the engines are timed in alternation ``--runs``
times (best of 3 passes each); the table gives the median of the runs and their spread.

Run:  pip install -r bench/requirements-pii.txt -r bench/requirements-native.txt
      python bench/native_probe.py [--runs R] [--texts N] [--write]
Needs cargo (rustup) and crates.io; the first build takes about a minute.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from guardrail_cost import texts
from report import write_section

from sluice_sidecar.guardrails.detectors import DETECTORS

CRATE = Path(__file__).resolve().parent / "native_probe"
KINDS = ("prose", "chat", "pii", "negatives")
#: Patterns without look-around: what a native scanner would search for before it checks
#: boundaries, checksums and context in code (each finds a superset of some detectors' matches).
PLAIN = {
    "number runs (card, SSN, phones, IPv4)": r"[+(0-9][0-9 ().+/xet,-]*[0-9]",
    "card-shaped digits": r"[0-9](?:[ -]?[0-9]){11,18}",
    "email-shaped text": r"[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}",
}


def build(out: Path) -> Any:
    """Build the probe's wheel into ``out``, unpack it there and import it."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "sluice-probe"))
    subprocess.run(
        [sys.executable, "-m", "maturin", "build", "--release", "--quiet", "--out", str(out)],
        cwd=CRATE,
        check=True,
        env={**os.environ, "CARGO_TARGET_DIR": str(target)},
    )
    (wheel,) = out.glob("*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(out),
         str(wheel)],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, str(out))
    return importlib.import_module("sluice_native_probe")


def rust_syntax(pattern: str) -> str:
    """A Python pattern in fancy-regex's syntax (named back-references are ``\\k<name>``)."""
    return re.sub(r"\(\?P=(\w+)\)", r"\\k<\1>", pattern)


def per_char(fn: Callable[[], object], chars: int) -> float:
    """Nanoseconds per character of one pass of ``fn`` (best of 3)."""
    return min(timeit.repeat(fn, number=1, repeat=3)) / chars * 1e9


def per_call(fn: Callable[[], object], number: int = 100_000) -> float:
    """Nanoseconds per call of ``fn`` (best of 3; Python's own call of ``fn`` included)."""
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e9


def alternate(
    engines: Sequence[Callable[[str], object]], sample: list[str], runs: int
) -> list[tuple[float, float, float]]:
    """Per engine, (median, min, max) ns per character over ``runs`` alternated runs."""
    chars = sum(len(t) for t in sample)
    got: list[list[float]] = [[] for _ in engines]
    for _ in range(runs):
        for i, engine in enumerate(engines):
            got[i].append(per_char(lambda e=engine: [e(t) for t in sample], chars))
    return [(statistics.median(v), min(v), max(v)) for v in got]


def _sre_count(pattern: re.Pattern[str]) -> Callable[[str], int]:
    return lambda text: sum(1 for _ in pattern.finditer(text))


def _cell(m: float, lo: float, hi: float) -> str:
    return f"{m:.1f} ({lo:.1f}-{hi:.1f})" if m >= 1 else f"{m:.2f} ({lo:.2f}-{hi:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--texts", type=int, default=12, help="texts per kind")
    ap.add_argument("--write", action="store_true", help="write the section of the docs")
    args = ap.parse_args()

    samples = {k: texts(k, args.texts, seed=11) for k in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        native = build(Path(tmp))
        lines = [
            f"Measured {datetime.date.today().isoformat()} by "
            f"`python bench/native_probe.py --runs {args.runs}` "
            f"({args.texts} texts per kind, ~4 KB each): ns per character, median of "
            f"{args.runs} alternated runs (min-max).",
            "",
        ]
        short, long = "abcd", samples["prose"][0]
        calls = [per_call(lambda: native.noop(short)) for _ in range(args.runs)]
        calls_long = [per_call(lambda: native.noop(long)) for _ in range(args.runs)]
        lines += [
            f"A call from Python into Rust with a str (through a lambda, as "
            f"timed): {statistics.median(calls):.0f} ns with a 4-character delta, "
            f"{statistics.median(calls_long):.0f} ns with a {len(long.encode()) / 1024:.1f} KB "
            "text (ASCII: no copy).",
            "",
            "Each built-in detector's pattern, Python's `re` → fancy-regex (the same pattern; "
            "spans equal on every ASCII text):",
            "",
            "| pattern | " + " | ".join(KINDS) + " |",
            "|---|" + "---|" * len(KINDS),
        ]
        for entity, detectors in DETECTORS.items():
            for n, det in enumerate(detectors):
                fancy = native.Fancy(rust_syntax(det.pattern.pattern))
                for kind in KINDS:
                    for text in samples[kind]:
                        if text.isascii():
                            want = [m.span() for m in det.pattern.finditer(text)]
                            if fancy.spans(text) != want:
                                raise SystemExit(f"{entity}: fancy-regex differs on {kind} text")
                cells = []
                for kind in KINDS:
                    sre, rust = alternate(
                        [_sre_count(det.pattern), fancy.count], samples[kind], args.runs
                    )
                    cells.append(f"{_cell(*sre)} → **{_cell(*rust)}**")
                name = entity if len(detectors) == 1 else f"{entity} ({n + 1})"
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
                print(lines[-1], flush=True)
        lines += [
            "",
            "Patterns without look-around, Python's `re` → the regex crate:",
            "",
            "| pattern | " + " | ".join(KINDS) + " |",
            "|---|" + "---|" * len(KINDS),
        ]
        for name, source in PLAIN.items():
            plain, compiled = native.Plain(source), re.compile(source)
            for kind in KINDS:
                for text in samples[kind]:
                    if text.isascii() and plain.spans(text) != [
                        m.span() for m in compiled.finditer(text)
                    ]:
                        raise SystemExit(f"{name}: the regex crate differs on {kind} text")
            cells = []
            for kind in KINDS:
                sre, rust = alternate([_sre_count(compiled), plain.count], samples[kind], args.runs)
                cells.append(f"{_cell(*sre)} → **{_cell(*rust)}**")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    markdown = "\n".join(lines)
    if args.write:
        write_section("native-probe", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
