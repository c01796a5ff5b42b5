"""``sluice eval``: a PromptTemplate version's evaluation cases run through the sidecar's own
request path, checked, reported, and optionally recorded for the operator's gate.

Owns the command: manifests → compiled config → the ``Plan`` (template, version by number or
label, route, cases, compiled checks; every problem with the input is exit 2 naming the file and
field) → ``runner.run`` → ``report`` (table, ``--json``, ``--junit``) → ``--mlflow`` →
``--record`` (the result as the template's ``evaluation.sluice.dev/v<N>`` annotation, which the
operator's gate reads; see ``sluice_operator.evaluation``). Exit 0 when the score reaches the
threshold, 1 below it, 2 on bad input or an unreachable judge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TextIO

from sluice_operator import evaluation, manifests
from sluice_operator.api.prompttemplate import Case, Check, PromptTemplateSpec
from sluice_operator.compile import compile_namespace
from sluice_operator.compile.compiler import version_hash

from . import checks as ck
from . import report, runner

EXIT_PASS, EXIT_FAIL, EXIT_BAD = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="run a PromptTemplate's evaluation cases through the sidecar (a CI gate)",
        description="Exit 0 when the score reaches spec.evaluation.threshold, 1 below it, "
        "2 on bad input or an unreachable judge route.",
    )
    p.add_argument("paths", nargs="+", help="YAML files or folders of them")
    p.add_argument("--template", required=True, help="PromptTemplate name")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="version number to evaluate")
    which.add_argument("--label", help="label whose version to evaluate (default production)")
    p.add_argument("--route", help="ModelRoute to answer with (default: the version's route)")
    p.add_argument("--namespace", help="namespace of the template if the manifests span several")
    p.add_argument("--cases", help="JSON-lines file of cases (for a configMapRef dataset)")
    p.add_argument("--repeat", type=int, default=1, help="runs of every case (default 1)")
    p.add_argument("--concurrency", type=int, default=4, help="cases at a time (default 4)")
    p.add_argument("--secrets-dir", default=".secrets", help="<secret>/<key> files with API keys")
    p.add_argument("--json", dest="json_file", metavar="FILE", help="write a JSON report")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--mlflow", metavar="URI", help="log the run to an MLflow tracking server")
    p.add_argument(
        "--record",
        action="store_true",
        help="write the result to the template in the cluster (annotation "
        "evaluation.sluice.dev/v<N>) for the operator's evaluation gate",
    )
    p.add_argument("--kubeconfig", help="kubeconfig for --record (default: the usual lookup)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        plan, threshold, settings, vhash, namespace = _plan(args)
    except ck.BadInputError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_BAD
    if args.repeat < 1 or args.concurrency < 1:
        print("error: --repeat and --concurrency must be at least 1", file=err)
        return EXIT_BAD
    try:
        results = asyncio.run(
            runner.run(
                plan,
                repeat=args.repeat,
                concurrency=args.concurrency,
                secrets_dir=Path(args.secrets_dir),
                progress=report.Progress(err),
            )
        )
    except runner.JudgeUnavailableError as exc:
        print(f"\nerror: {exc}; the run cannot be scored (exit 2)", file=err)
        return EXIT_BAD
    summary = report.summarize(plan, threshold, results, args.repeat)
    report.table(summary, sys.stdout)
    if args.json_file:
        report.write_json(summary, Path(args.json_file))
    if args.junit:
        report.write_junit(summary, Path(args.junit))
    if args.mlflow:
        from . import mlflow

        try:
            run_id = mlflow.log_run(args.mlflow, summary, args.repeat)
            print(f"logged to MLflow run {run_id}", file=err)
        except mlflow.MlflowError as exc:
            print(f"error: MLflow: {exc}", file=err)
            return EXIT_BAD
    if args.record:
        record = evaluation.Record(
            template=plan.template,
            version=plan.version,
            hash=vhash,
            settings_hash=settings,
            score=summary.score,
            threshold=threshold,
            passed=summary.passed,
            cases=len(plan.cases),
            runs=args.repeat,
            spread=summary.spread or None,
            failed=summary.failed()[: evaluation.MAX_FAILED],
            at=summary.at,
            route=plan.route,
        )
        code = _record(args, namespace, record, err)
        if code:
            return code
    return EXIT_PASS if summary.passed else EXIT_FAIL


def _plan(
    args: argparse.Namespace,
) -> tuple[runner.Plan, float, str, str, str]:
    """The run's plan, threshold, settings hash, version hash and namespace; ``BadInputError``
    names the file and field of any problem."""
    paths = [Path(p) for p in args.paths]
    absent = manifests.missing(paths)
    if absent:
        raise ck.BadInputError("; ".join(f"{p}: no such file or directory" for p in absent))
    resources, errors = manifests.load_paths(paths)
    if errors:
        raise ck.BadInputError("\n".join(str(e) for e in errors))
    found = [
        r
        for r in resources
        if r.kind.kind == "PromptTemplate"
        and r.name == args.template
        and (args.namespace is None or r.namespace == args.namespace)
    ]
    if not found:
        raise ck.BadInputError(
            f"no PromptTemplate {args.template!r} in {', '.join(map(str, paths))}"
        )
    if len(found) > 1:
        raise ck.BadInputError(
            f"PromptTemplate {args.template!r} is in namespaces "
            f"{', '.join(r.namespace for r in found)}; choose one with --namespace"
        )
    res = found[0]
    where = f"{res.origin}: PromptTemplate {res.name!r}"
    spec = res.spec
    assert isinstance(spec, PromptTemplateSpec)
    if args.version is not None:
        number = args.version
    else:
        label = args.label or "production"
        if label not in (spec.labels or {}):
            raise ck.BadInputError(f"{where}: spec.labels has no label {label!r}")
        number = (spec.labels or {})[label]
    version = next((v for v in spec.versions if v.version == number), None)
    if version is None:
        raise ck.BadInputError(f"{where}: spec.versions has no version {number}")
    ev = spec.evaluation
    if ev is None:
        raise ck.BadInputError(f"{where}: spec.evaluation is not set; add cases and checks")
    cases = _cases(ev.dataset.cases if ev.dataset else None, args.cases, where)
    check_list = list(ev.checks or []) or [Check(type="contains")]
    compiled = ck.compile_checks(check_list, [c for _, c in cases], where)
    result = compile_namespace(res.namespace, resources)
    routes = {r.name for r in result.config.routes}
    route = args.route or version.route
    if route is None:
        raise ck.BadInputError(f"{where}: spec.versions[{number}].route is not set; pass --route")
    if route not in routes:
        raise ck.BadInputError(
            f"{where}: route {route!r} is not a compiled ModelRoute (have: {sorted(routes)})"
        )
    needs_judge = any(c.type == "judge" for c in compiled)
    if ev.judge is not None and needs_judge and ev.judge.route not in routes:
        raise ck.BadInputError(
            f"{where}: spec.evaluation.judge.route: no ModelRoute {ev.judge.route!r}"
        )
    plan = runner.Plan(
        template=res.name,
        version=number,
        route=route,
        cases=cases,
        checks=compiled,
        judge=ev.judge,
        pass_score=evaluation.pass_score(ev.judge) if ev.judge else 1,
        config=result.config,
    )
    return plan, ev.threshold, evaluation.settings_hash(ev), version_hash(version), res.namespace


def _cases(inline: list[Case] | None, file: str | None, where: str) -> list[tuple[str, Case]]:
    items: list[Case] = []
    if file:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ck.BadInputError(f"{file}: {exc.strerror}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                items.append(Case.model_validate(json.loads(line)))
            except ValueError as exc:
                raise ck.BadInputError(
                    f"{file}: line {n}: not a case ({str(exc).splitlines()[0]})"
                ) from None
    else:
        items = list(inline or [])
    if not items:
        raise ck.BadInputError(
            f"{where}: spec.evaluation.dataset has no cases"
            + ("" if inline is not None else " inline; pass a configMapRef's cases with --cases")
        )
    names = [c.name or f"case-{i}" for i, c in enumerate(items, 1)]
    if len(set(names)) != len(names):
        raise ck.BadInputError(f"{where}: spec.evaluation.dataset.cases: case names must be unique")
    return list(zip(names, items, strict=True))


def _record(
    args: argparse.Namespace, namespace: str, record: evaluation.Record, err: TextIO
) -> int:
    """Patch the annotation onto the template in the cluster."""
    try:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
    except ModuleNotFoundError:
        print(
            "error: --record needs the [operator] extra: pip install 'sluicegate[operator]'",
            file=err,
        )
        return EXIT_BAD
    from sluice_operator.api import GROUP, VERSION

    try:
        config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
        api = client.CustomObjectsApi()
        body = {
            "metadata": {
                "annotations": {evaluation.annotation_key(record.version): record.to_annotation()}
            }
        }
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "prompttemplates", record.template, body
        )
    except ApiException as exc:
        print(
            f"error: recording on PromptTemplate {namespace}/{record.template}: "
            f"{exc.status} {exc.reason}",
            file=err,
        )
        return EXIT_BAD
    except Exception as exc:  # kubeconfig problems
        print(f"error: recording: {exc}", file=err)
        return EXIT_BAD
    print(
        f"recorded on PromptTemplate {namespace}/{record.template} as "
        f"{evaluation.annotation_key(record.version)}",
        file=err,
    )
    return 0
