"""Options of the operator process, parsed once at start-up and handed to the handlers.

Owns the ``OperatorOptions`` dataclass and its command-line flags (``sluice operator --help``).
No IO.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorOptions:
    namespace: str = "sluice-system"  # where the operator itself runs (never injected)
    standalone: bool = False  # no leader election: one replica, local runs and tests
    #: The coordination.k8s.io Lease in ``namespace`` that elects the leader (``leader``).
    leader_lease: str = "sluice-operator"
    leader_lease_seconds: float = 15.0
    controlplane_host: str = "0.0.0.0"  # noqa: S104 - sidecars in other pods connect here
    controlplane_port: int = 9090
    #: tls.crt + tls.key (and ca.crt, given to injected sidecars) for the control plane's HTTPS
    controlplane_cert_dir: str | None = None
    #: development only: the control plane in plain HTTP (bearer tokens in clear)
    controlplane_insecure_http: bool = False
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    verbose: bool = False
    webhook_host: str = "0.0.0.0"  # noqa: S104 - the apiserver connects here
    webhook_port: int = 9443
    webhook_cert_dir: str | None = None  # tls.crt + tls.key; no webhook when unset
    out_of_cluster: bool = False  # credentials from the kubeconfig only (a laptop, dev)
    webhook_url: str | None = None  # https URL the apiserver calls (--out-of-cluster)


def add_flags(parser: argparse.ArgumentParser) -> None:
    d = OperatorOptions()
    parser.add_argument("--namespace", default=d.namespace, help="the operator's own namespace")
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="no leader election: this replica leads at once (one replica, dev, tests)",
    )
    parser.add_argument(
        "--leader-lease",
        default=d.leader_lease,
        help="the Lease (coordination.k8s.io, in --namespace) that elects the one replica that "
        "writes status, takes usage reports and grants budget leases",
    )
    # Before 0.2 leadership was kopf's peering object, named by --peering: still accepted.
    parser.add_argument("--peering", dest="leader_lease", help=argparse.SUPPRESS)
    parser.add_argument(
        "--leader-lease-seconds",
        type=float,
        default=d.leader_lease_seconds,
        help="how long a leader's Lease lasts without renewal before another replica takes over",
    )
    parser.add_argument("--controlplane-host", default=d.controlplane_host)
    parser.add_argument("--controlplane-port", type=int, default=d.controlplane_port)
    parser.add_argument(
        "--controlplane-cert-dir",
        default=os.environ.get("SLUICE_CONTROLPLANE_CERT_DIR"),
        help="folder with tls.crt and tls.key (reloaded when they change) and ca.crt (the CA "
        "injected sidecars trust) for the control plane's HTTPS (env SLUICE_CONTROLPLANE_CERT_DIR)",
    )
    parser.add_argument(
        "--controlplane-insecure-http",
        action="store_true",
        help="development only: serve the control plane in plain HTTP, so sidecars' tokens "
        "travel in clear; without it the control plane needs --controlplane-cert-dir",
    )
    parser.add_argument(
        "--liveness", default=d.liveness, help="kopf liveness endpoint URL ('' to disable)"
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--webhook-host", default=d.webhook_host)
    parser.add_argument(
        "--webhook-port",
        type=int,
        default=int(os.environ.get("SLUICE_WEBHOOK_PORT", d.webhook_port)),
        help="injector webhook port (env SLUICE_WEBHOOK_PORT)",
    )
    parser.add_argument(
        "--webhook-cert-dir",
        default=os.environ.get("SLUICE_WEBHOOK_CERT_DIR"),
        help="folder with tls.crt and tls.key for the injector webhook; no webhook when unset "
        "(env SLUICE_WEBHOOK_CERT_DIR)",
    )

    parser.add_argument(
        "--out-of-cluster",
        action="store_true",
        help="run from a laptop against the cluster of your kubeconfig (development; see "
        "docs/operations.md): credentials from the kubeconfig only; with --webhook-url the "
        "injector webhook serves that URL with a certificate made for its host",
    )
    parser.add_argument(
        "--webhook-url",
        default=None,
        metavar="https://HOST:PORT",
        help="with --out-of-cluster: the address the apiserver reaches this machine at; prints "
        "the `helm upgrade` that points the chart's webhook configuration at it",
    )


def from_args(args: argparse.Namespace) -> OperatorOptions:
    return OperatorOptions(
        namespace=args.namespace,
        standalone=args.standalone,
        leader_lease=args.leader_lease,
        leader_lease_seconds=max(1.0, args.leader_lease_seconds),
        controlplane_host=args.controlplane_host,
        controlplane_port=args.controlplane_port,
        controlplane_cert_dir=args.controlplane_cert_dir,
        controlplane_insecure_http=args.controlplane_insecure_http,
        liveness=args.liveness or None,
        verbose=args.verbose,
        webhook_host=args.webhook_host,
        webhook_port=args.webhook_port,
        webhook_cert_dir=args.webhook_cert_dir,
        out_of_cluster=args.out_of_cluster,
        webhook_url=args.webhook_url,
    )
