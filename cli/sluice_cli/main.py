"""The ``sluice`` command line: thin entry points over the packages, nothing else.

Subcommands:
  render    validate manifests and print the compiled sidecar config (``--strict`` for CI)
  crds      print (or --write / --check) the generated CustomResourceDefinitions
  run       compile manifests and serve the sidecar locally, reloading on change
  demo      serve the guided tour (examples/02-tour) with the mock provider, one call per feature
  eval      run a PromptTemplate's evaluation cases through the sidecar (CI gate; JUnit, JSON,
            MLflow; ``--record`` for the operator's gate) - ``sluice_cli.evaluate``
  simulate  replay audit records against changed manifests: what would be refused, rerouted,
            cost more, or judged otherwise (CI gate) - ``sluice_cli.simulate``
  status    which pod runs which config, backend health, budget state (``sluice_cli.fleet``;
            also ``kubectl sluice status``)
  doctor    check an install and say what to fix (``sluice_cli.doctor``)
  operator  run the Kubernetes operator (``sluice_operator.main``; ``--out-of-cluster``)
  dev       developer helpers (``sluice dev cluster``: a local kube-apiserver; ``sluice dev
            fleet``: that, the operator and N sidecars - ``sluice_cli.devfleet``)

Maintainer tools (regenerating docs) are not here: see ``sluice_cli.maintainer``.

Heavy or optional imports (the sidecar server, kopf) happen inside the subcommand that needs them,
so ``sluice render`` starts fast and works without the ``[operator]`` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import yaml

from sluice_operator import crdgen, manifests
from sluice_operator.compile import CompileResult, compile_namespace

EXIT_INVALID = 1
EXIT_USAGE = 2
DISTRIBUTION = "sluicegate"


def version() -> str:
    """The installed version of the distribution."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def compile_paths(paths: Sequence[str | Path], err: TextIO) -> list[CompileResult] | None:
    """Load, validate and compile manifests; print errors and return None when any is invalid."""
    absent = manifests.missing(paths)
    if absent:
        for path in absent:
            print(f"error: {path}: no such file or directory", file=err)
        return None
    resources, errors = manifests.load_paths(paths)
    if errors:
        for error in errors:
            print(f"error: {error}", file=err)
        print(
            f"{len(errors)} error(s); nothing was compiled. Fix the fields named above.",
            file=err,
        )
        return None
    namespaces = sorted({r.namespace for r in resources})
    if not namespaces:
        print(
            "error: no Sluice resources (apiVersion sluice.dev/v1alpha1) found in "
            + ", ".join(map(str, paths)),
            file=err,
        )
        return None
    results = [compile_namespace(ns, resources) for ns in namespaces]
    for result in results:
        for problem in result.problems:
            print(f"warning: namespace {result.config.namespace}: {problem}", file=err)
    return results


def cmd_render(args: argparse.Namespace) -> int:
    results = compile_paths(args.paths, sys.stderr)
    if results is None:
        return EXIT_INVALID
    if args.output == "json":
        docs = [r.config.model_dump(mode="json", by_alias=True) for r in results]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        parts = [
            f"# namespace {r.config.namespace}, config hash {r.hash}\n"
            + yaml.safe_dump(
                r.config.model_dump(mode="json", by_alias=True), sort_keys=False, width=100
            )
            for r in results
        ]
        sys.stdout.write("---\n".join(parts))
    problems = sum(len(r.problems) for r in results)
    if args.strict and problems:
        print(
            f"{problems} problem(s) named above (warnings); failing because of --strict",
            file=sys.stderr,
        )
        return EXIT_INVALID
    return 0


CHART_CRDS = Path("charts/sluice/crds")


def cmd_crds(args: argparse.Namespace) -> int:
    rendered = crdgen.render_all()
    if not (args.check or args.write):
        sys.stdout.write(crdgen.render_stream())
        return 0
    targets = [Path(args.dir)]
    if args.dir == "crds" and CHART_CRDS.is_dir():
        targets.append(CHART_CRDS)  # the Helm chart ships identical copies
    stale: list[Path] = []
    for target in targets:
        stale += [target / n for n, t in rendered.items() if not _same(target / n, t)]
        if target.is_dir():  # generated files we no longer generate
            stale += [p for p in target.glob("*.sluice.dev.yaml") if p.name not in rendered]
    if args.check:
        for path in stale:
            print(f"{path}: out of date; run `sluice crds --write`", file=sys.stderr)
        return EXIT_INVALID if stale else 0
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        for name, text in rendered.items():
            (target / name).write_text(text, encoding="utf-8")
    for path in stale:
        if path.name not in rendered:
            path.unlink()
    print(f"wrote {len(rendered)} CRDs to {', '.join(map(str, targets))}", file=sys.stderr)
    return 0


def _same(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except OSError:
        return False


def quickstart_dir() -> Path:
    """The quickstart manifests: from the source tree, or the copy packaged in the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (
        here.parents[1] / "examples" / "01-quickstart",
        here / "examples" / "01-quickstart",
    ):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the quickstart examples are not installed")


def cmd_run(args: argparse.Namespace) -> int:
    from . import localrun

    return localrun.run(
        [Path(p) for p in args.paths],
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        secrets_dir=Path(args.secrets_dir),
        namespace=args.namespace,
        banner=False,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from . import localrun, tour

    host, folder = "127.0.0.1", tour.tour_dir()
    result = localrun.compile_for([folder], None)
    busy = localrun.busy_port_message(host, args.port, args.admin_port)
    if not isinstance(result, str) and busy is None:
        print(tour.banner(host, args.port, args.admin_port, result), file=sys.stderr)
    return localrun.run(
        [folder],
        host=host,
        port=args.port,
        admin_port=args.admin_port,
        secrets_dir=Path(args.secrets_dir),
        namespace=None,
        banner=False,
    )


def _missing_extra(exc: ModuleNotFoundError, command: str, packages: set[str]) -> int:
    """Say which extra to install when ``exc`` is one of its ``packages`` missing; else re-raise."""
    if exc.name is None or exc.name.partition(".")[0] not in packages:
        raise exc
    print(
        f"error: {command} needs {exc.name.partition('.')[0]}, part of the [operator] extra: "
        "pip install 'sluicegate[operator]'",
        file=sys.stderr,
    )
    return EXIT_INVALID


def cmd_operator(args: argparse.Namespace) -> int:
    from sluice_operator import main as operator_main
    from sluice_operator import settings

    try:
        return operator_main.run(settings.from_args(args))
    except ModuleNotFoundError as exc:
        return _missing_extra(exc, "sluice operator", {"kopf", "kubernetes"})


def cmd_status(args: argparse.Namespace) -> int:
    from . import fleet

    return fleet.main(args.namespace, args.output, kubeconfig=args.kubeconfig, context=args.context)


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    return doctor.main(
        kubeconfig=args.kubeconfig,
        context=args.context,
        operator_namespace=args.operator_namespace,
        service_account=args.service_account,
        canary=args.canary,
    )


def cmd_dev_cluster(args: argparse.Namespace) -> int:
    try:
        from . import devcluster
    except ModuleNotFoundError as exc:
        return _missing_extra(exc, "sluice dev cluster", {"cryptography"})

    argv = ["--workdir", args.workdir] if args.workdir else []
    argv.append(f"--timeout={args.timeout}")
    return devcluster.main_dev_cluster(argv + [f"--apply={p}" for p in args.apply])


def cmd_dev_fleet(args: argparse.Namespace) -> int:
    try:
        from . import devfleet
    except ModuleNotFoundError as exc:
        return _missing_extra(exc, "sluice dev fleet", {"cryptography"})
    try:
        return devfleet.run(args)
    except ModuleNotFoundError as exc:
        return _missing_extra(exc, "sluice dev fleet", {"kopf", "kubernetes"})


def _add_cluster_commands(sub: Any) -> None:
    """``status`` and ``doctor``: read a cluster through the kubeconfig."""

    def cluster_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG)")
        p.add_argument("--context", default=None, help="kubeconfig context (default: current)")

    status = sub.add_parser(
        "status", help="pods, their config hash and last report, backend health, budget state"
    )
    status.add_argument(
        "-n", "--namespace", default=None, help="namespace (default: the context's)"
    )
    status.add_argument("-o", "--output", choices=["table", "json"], default="table")
    cluster_flags(status)
    status.set_defaults(func=cmd_status)

    doctor = sub.add_parser("doctor", help="check an install and say what to fix")
    doctor.add_argument(
        "--operator-namespace", default=None, help="default: the chart's release namespace"
    )
    doctor.add_argument(
        "--service-account",
        default=None,
        metavar="[NS/]NAME",
        help="the operator's ServiceAccount (default: the operator Deployment's)",
    )
    doctor.add_argument(
        "--canary",
        default=None,
        metavar="NAMESPACE",
        help="also dry-run an opted-in pod in NAMESPACE and check it comes back injected",
    )
    cluster_flags(doctor)
    doctor.set_defaults(func=cmd_doctor)


def _add_dev_commands(sub: Any) -> None:
    """``dev cluster`` and ``dev fleet``: local control planes for development and tests."""
    dev = sub.add_parser("dev", help="developer tools")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    cluster = dev_sub.add_parser("cluster", help="start a local etcd + kube-apiserver")
    cluster.add_argument("--workdir", default=None, help="folder for certs, data and kubeconfig")
    cluster.add_argument(
        "--apply", action="append", default=[], metavar="PATH", help="kubectl apply once up"
    )
    cluster.add_argument(
        "--timeout", type=float, default=180.0, help="startup timeout, seconds (default 180)"
    )
    cluster.set_defaults(func=cmd_dev_cluster)
    fleet = dev_sub.add_parser(
        "fleet",
        help="a local control plane, the operator and N sidecars (pods of one namespace)",
        description="Start etcd + kube-apiserver, the CRDs, the manifests, the operator and N "
        "sidecar processes registered as pods of one namespace; print one line per sidecar "
        "and the kubeconfig; run until Ctrl-C (docs/local-cluster.md).",
    )
    fleet.add_argument("paths", nargs="+", metavar="MANIFEST", help="YAML files or folders")
    fleet.add_argument(
        "--replicas", type=int, default=2, help="sidecar processes, one pod each (default 2)"
    )
    fleet.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace of the manifests and pods (default: the manifests', else default)",
    )
    fleet.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for certificates, etcd data, logs, tokens and audit logs (default: a new "
        "temporary folder, removed on a clean stop)",
    )
    fleet.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="once all is up, write a JSON description there (URLs, ports, pids, logs); "
        "removed on stop",
    )
    fleet.add_argument(
        "--report-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="SLUICE_REPORT_INTERVAL of the sidecars (default: theirs, 10 s)",
    )
    fleet.add_argument(
        "--secrets-dir",
        type=Path,
        default=Path(".secrets"),
        help="folder with <secret-name>/<key> files holding API keys (default .secrets)",
    )
    fleet.add_argument(
        "--timeout", type=float, default=180.0, help="startup timeout, seconds (default 180)"
    )
    fleet.add_argument("--verbose", action="store_true", help="the operator logs at debug level")
    fleet.add_argument(
        "--count-calls",
        action="store_true",
        help="route the sidecars' control-plane calls through a counting pass-through "
        "(counts by route at <its URL>/fleet/calls; for benchmarks)",
    )
    fleet.set_defaults(func=cmd_dev_fleet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice", description="Kubernetes-native LLM traffic control."
    )
    parser.add_argument("--version", action="version", version=f"sluice {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="validate manifests and print the compiled config")
    render.add_argument("paths", nargs="+", help="YAML files or folders of them")
    render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    render.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when there are problems (dangling references) too, not only errors (for CI)",
    )
    render.set_defaults(func=cmd_render)

    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions")
    crds.add_argument("--write", action="store_true", help="write them to --dir")
    crds.add_argument("--check", action="store_true", help="fail if --dir is out of date")
    crds.add_argument("--dir", default="crds", help="folder for --write/--check (default crds)")
    crds.set_defaults(func=cmd_crds)

    def serve_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", type=int, default=4000, help="API port (default 4000)")
        p.add_argument(
            "--admin-port", type=int, default=4001, help="metrics/health port (default 4001)"
        )
        p.add_argument(
            "--secrets-dir",
            default=".secrets",
            help="folder with <secret-name>/<key> files holding API keys (default .secrets)",
        )

    run = sub.add_parser("run", help="compile manifests and serve the sidecar locally")
    run.add_argument("paths", nargs="+", help="YAML files or folders of them")
    run.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    run.add_argument("--namespace", default=None, help="namespace to serve if several")
    serve_flags(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo", help="serve the guided tour with the mock provider and print a call per feature"
    )
    serve_flags(demo)
    demo.set_defaults(func=cmd_demo)

    _add_cluster_commands(sub)

    from sluice_operator import settings

    operator = sub.add_parser("operator", help="run the Kubernetes operator")
    settings.add_flags(operator)
    operator.set_defaults(func=cmd_operator)

    from . import evaluate, simulate

    evaluate.add_parser(sub)
    simulate.add_parser(sub)

    _add_dev_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
