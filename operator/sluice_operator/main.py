"""``sluice operator`` / ``python -m sluice_operator.main``: start the kopf operator.

Thin entry point: parse options, import the handlers (which registers them), prepare the
out-of-cluster mode (``outofcluster``: certificates for ``--webhook-url``), check that the start
can work (``preflight``: credentials, the leader-election Lease; the webhook configuration's URL),
run kopf. kopf runs standalone in every replica (each watches and serves); which replica writes
is decided by the operator's own leader election (``leader``), not by kopf's peering.
Run as a module, never as ``kopf run file.py`` (that puts the file's folder first on sys.path).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .settings import OperatorOptions, add_flags, from_args

EXIT_CANNOT_START = 2


def run(options: OperatorOptions) -> int:
    """Check the start can work (``preflight``), then run kopf until it stops.

    Exits 2 with one line on stderr when it cannot: no credentials, no namespace or RBAC for the
    leader-election Lease.
    """
    import kopf

    from . import handlers, outofcluster, preflight  # noqa: F401 - importing registers handlers

    try:
        if options.out_of_cluster:
            options = outofcluster.prepare(options)
        preflight.check(options)
        preflight.check_controlplane_tls(options)
    except (preflight.PreflightError, outofcluster.OutOfClusterError) as exc:
        print(f"sluice operator: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    if options.out_of_cluster and options.webhook_url and options.webhook_cert_dir:
        ca = outofcluster.ca_bundle(Path(options.webhook_cert_dir))
        mismatch = preflight.webhook_mismatch(options, ca)
        if mismatch is not None:
            print(
                f"sluice operator: {mismatch}; the apiserver will not call this operator until "
                f"you run:\n  {outofcluster.helm_command(options)}",
                file=sys.stderr,
            )

    kopf.configure(verbose=options.verbose)
    kopf.run(
        clusterwide=True,
        standalone=True,  # every replica watches; ``leader`` elects the one that writes
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
