"""``sluice simulate``: recorded audit records replayed against changed manifests, to say what the
change would have done to that traffic before it ships (a CI gate).

Owns the command: the audit files (``records.load``: exit 2 naming the file, line and field of a
bad record) and the manifests (compiled like ``sluice render``; exit 2 when invalid) → one
``replay.Env`` per namespace → the old outcomes (what the records say, or the replay under
``--against OLD_MANIFESTS``) and the new ones (``replay.replay``) → ``report.compare`` → the
table on stdout and ``--json FILE``. Exit 0 when nothing would differ, 1 when something would,
2 on bad input. docs/cli.md describes what is replayed and what cannot be.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import records, replay, report

EXIT_SAME, EXIT_DIFFERS, EXIT_BAD = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="replay audit records against changed manifests and report what would differ",
        description="Exit 0 when nothing would differ, 1 when something would, 2 on bad input.",
    )
    p.add_argument("paths", nargs="+", help="the new manifests: YAML files or folders of them")
    p.add_argument(
        "--audit",
        action="append",
        required=True,
        metavar="FILE",
        help="the sidecar's audit log (JSON lines); repeat for several",
    )
    p.add_argument(
        "--against",
        action="append",
        metavar="OLD_MANIFESTS",
        help="replay the old manifests too and compare the two replays "
        "(default: compare with what the records say happened)",
    )
    p.add_argument(
        "--namespace",
        help="the manifests' namespace for records without one (if the manifests span several)",
    )
    p.add_argument(
        "--labels",
        action="append",
        metavar="KEY=VALUE",
        help="the pods' labels, for workloadSelector and selector.matchLabels "
        "(default: unknown, every selector matches)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="output cap assumed for requests whose record shows none "
        "(default: the tokens each answer used)",
    )
    p.add_argument("--json", dest="json_file", metavar="FILE", help="write a JSON report")
    p.add_argument("--list", type=int, default=10, metavar="N", help="changes listed (default 10)")
    p.set_defaults(func=main)


def _labels(items: Sequence[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--labels {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _envs(
    paths: Sequence[str],
    labels: Mapping[str, str] | None,
    namespace: str | None,
) -> dict[str | None, replay.Env] | None:
    from ..main import compile_paths

    results = compile_paths(paths, sys.stderr)
    if results is None:
        return None
    envs: dict[str | None, replay.Env] = {
        r.config.namespace: replay.Env.of(r.config, labels) for r in results
    }
    if len(envs) == 1:  # one namespace's manifests apply to every record
        only = next(iter(envs.values()))
        return {None: only}
    if namespace is not None:
        if namespace not in envs:
            print(f"error: --namespace {namespace}: not in {', '.join(paths)}", file=sys.stderr)
            return None
        envs[None] = envs[namespace]
    return envs


def main(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        labels = _labels(args.labels)
        recs = records.load(args.audit)
    except ValueError as exc:  # BadRecordError too
        print(f"error: {exc}", file=err)
        return EXIT_BAD
    if args.max_tokens is not None and args.max_tokens < 1:
        print("error: --max-tokens must be at least 1", file=err)
        return EXIT_BAD
    new_envs = _envs(args.paths, labels, args.namespace)
    if new_envs is None:
        return EXIT_BAD
    new = replay.replay(recs, new_envs, assume_cap=args.max_tokens)
    if args.against:
        old_envs = _envs(args.against, labels, args.namespace)
        if old_envs is None:
            return EXIT_BAD
        old = replay.replay(recs, old_envs, assume_cap=args.max_tokens)
        old_label = "a replay of " + ", ".join(args.against)
    else:
        old = [replay.recorded(r) for r in recs]
        old_label = "what the records say happened"
    rep = report.compare(recs, old, new)
    report.table(rep, sys.stdout, old_label=old_label, listed=max(0, args.list))
    if args.json_file:
        doc = report.as_json(rep, manifests=args.paths, against=args.against)
        doc["audit"] = list(args.audit)
        try:
            Path(args.json_file).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: --json {args.json_file}: {exc}", file=err)
            return EXIT_BAD
    return EXIT_DIFFERS if rep.differs else EXIT_SAME
