"""Maintainer tools, kept out of the user-facing ``sluice`` command.

``python -m sluice_cli.maintainer docs [--write]`` checks (or rewrites) the generated parts of
``docs/``: the field reference of each kind in ``docs/<kind>.md`` (``sluice_operator.docgen``)
and the annotations table in ``docs/annotations.md`` and ``docs/injection.md``
(``sluice_operator.inject.annotations``). ``hack/test.sh`` runs the check; a stale page fails it
with the command that fixes it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sluice_operator import docgen
from sluice_operator.api import KINDS
from sluice_operator.inject import annotations as ann

EXIT_STALE = 1
COMMAND = "python -m sluice_cli.maintainer docs --write"


def stale_docs(repo: Path) -> dict[Path, str]:
    """Each generated page that differs from what it should be, with the text it should have."""
    wanted: dict[Path, str] = {}
    for kind in KINDS:
        path = repo / "docs" / f"{kind.singular}.md"
        current = path.read_text(encoding="utf-8") if path.exists() else f"# {kind.kind}\n"
        wanted[path] = docgen.splice(current, kind)
    wanted.update(ann.expected_docs(repo))
    return {
        path: text
        for path, text in wanted.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    }


def cmd_docs(args: argparse.Namespace) -> int:
    stale = stale_docs(Path(args.repo))
    if args.write:
        for path, text in stale.items():
            path.write_text(text, encoding="utf-8")
        print(f"updated {len(stale)} page(s)", file=sys.stderr)
        return 0
    for path in stale:
        print(f"{path}: generated section out of date; run `{COMMAND}`", file=sys.stderr)
    return EXIT_STALE if stale else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sluice_cli.maintainer", description="Sluice maintainer tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    docs = sub.add_parser("docs", help="check (or --write) the generated sections of docs/")
    docs.add_argument("--write", action="store_true", help="rewrite them")
    docs.add_argument("--repo", default=".", help="repository root (default .)")
    docs.set_defaults(func=cmd_docs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
