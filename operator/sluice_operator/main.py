"""``sluice operator`` / ``python -m sluice_operator.main``: start the kopf operator.

Thin entry point: parse options, import the handlers (which registers them), check that the start
can work (``preflight``: credentials, peering CRD), run kopf.
Run as a module, never as ``kopf run file.py`` (that puts the file's folder first on sys.path).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .settings import OperatorOptions, add_flags, from_args

EXIT_CANNOT_START = 2


def run(options: OperatorOptions) -> int:
    """Check the start can work (``preflight``), then run kopf until it stops.

    Exits 2 with one line on stderr when it cannot: no credentials, no peering CRD.
    """
    import kopf

    from . import handlers, preflight  # noqa: F401 - importing handlers registers them

    try:
        preflight.check(options)
    except preflight.PreflightError as exc:
        print(f"sluice operator: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START

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
