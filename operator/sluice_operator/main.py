"""``sluice operator`` / ``python -m sluice_operator.main``: start the kopf operator.

Thin entry point: parse options, import the handlers (which registers them), run kopf.
Run as a module, never as ``kopf run file.py`` (that puts the file's folder first on sys.path).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .settings import OperatorOptions, add_flags, from_args


def run(options: OperatorOptions) -> int:
    import kopf

    from . import handlers  # noqa: F401 - registers the handlers

    kopf.configure(verbose=options.verbose)
    kopf.run(
        clusterwide=True,
        standalone=options.standalone,
        peering_name=None if options.standalone else options.peering,
        liveness_endpoint=options.liveness,
        memo=kopf.Memo(options=options),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice operator", description="Run the Sluice operator.")
    add_flags(parser)
    return run(from_args(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
