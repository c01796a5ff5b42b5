"""Entry points: ``serve(...)`` (what ``sluice run`` and the container call) and the CLI parser.

Owns process concerns only: argument parsing, logging set-up, the audit stream, binding the two
ports, the garbage collector's tuning, signals and graceful shutdown. Everything else is
``app.create_app``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web

from . import controlplane_client, tracing
from .app import HEADER_TIMEOUT, api_runner, create_admin_app, create_app, quota_keeper
from .budget import BudgetStage
from .config_source import ConfigSource, source_from
from .contract import SidecarConfig
from .gateway import GATEWAY
from .guardrails.native import scanning
from .metering import AuditSink, JsonLinesAudit, NullAudit, who_from_env

log = logging.getLogger("sluice.sidecar")
#: Allocations between collections of the youngest generation once serving (default 700).
GC_GEN0_THRESHOLD = 10_000


#: Audit lines are written through a buffer of this size and flushed once a second, so a
#: record costs no system call of its own (the image runs with PYTHONUNBUFFERED=1).
_AUDIT_BUFFER = 1 << 16


def _audit_sink(target: str | None) -> tuple[AuditSink, IO[str] | None]:
    if target is None or target == "none":
        return NullAudit(), None
    if target == "-":
        stdout = open(  # noqa: SIM115 - closed on shutdown (not the fd: closefd=False)
            sys.stdout.fileno(), "w", encoding="utf-8", buffering=_AUDIT_BUFFER, closefd=False
        )
        return JsonLinesAudit(stdout), stdout
    stream = open(target, "a", encoding="utf-8", buffering=_AUDIT_BUFFER)  # noqa: SIM115
    return JsonLinesAudit(stream), stream


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running server, once it has started.

    Everything allocated at start-up (modules, the config, aiohttp's machinery) lives as long as
    the process: ``gc.freeze`` moves it out of every future collection. Requests then allocate
    short-lived containers at a high rate; collecting the youngest generation every 700
    allocations (the default) spends several per cent of the CPU on objects of requests still
    in flight, so the threshold is raised. Memory is still reclaimed by reference counting; the
    collector only finds cycles.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def serve_async(
    config: str | Path | SidecarConfig | ConfigSource,
    host: str = "127.0.0.1",
    port: int = 4000,
    admin_port: int = 4001,
    secrets_dir: str | Path | None = None,
    *,
    admin_host: str = "127.0.0.1",
    audit_log: str | None = "-",
    started: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    otlp_endpoint: str | None = None,
    audit_prompts: bool = False,
    header_timeout: float = HEADER_TIMEOUT,
    gc_tuning: bool = False,
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM); then finish in-flight requests.
    ``gc_tuning`` applies ``tune_gc`` once serving (for a process of its own: ``serve``)."""
    audit, audit_stream = _audit_sink(audit_log)
    tracer = _tracer(otlp_endpoint)
    identity = controlplane_client.Identity.from_env(os.environ)
    reporter: controlplane_client.UsageReporter | None = None
    source: ConfigSource
    # One connector for the config long-poll, the reports and the leases (2 connections, not 3).
    shared: aiohttp.BaseConnector | None = None
    if identity is not None and isinstance(config, str | Path):
        # In a pod: the mounted ConfigMap boots us, the operator's long-poll keeps us current.
        shared = identity.connector()
        cp_source = controlplane_client.ControlPlaneConfig(config, identity, connector=shared)
        source = cp_source
        reporter = controlplane_client.UsageReporter(
            identity,
            config_hash=lambda: cp_source.current_hash,
            interval=identity.report_interval,
            connector=shared,
        )
    else:
        source = source_from(config)
    api = create_app(
        source,
        secrets_dir=secrets_dir,
        audit=audit,
        on_finish=(reporter.record,) if reporter is not None else (),
        tracer=tracer,
        audit_prompts=audit_prompts,
    )
    if reporter is not None and identity is not None:
        _report_and_lease(api, identity, reporter, shared)
    admin = create_admin_app(api)
    runner = api_runner(api, header_timeout=header_timeout)
    admin_runner = web.AppRunner(admin, access_log=None)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    await admin_runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await web.TCPSite(admin_runner, admin_host, admin_port).start()
        log.info(
            "sluice sidecar serving the API on %s:%d, admin on %s:%d; guardrail text scanning: %s",
            host,
            port,
            admin_host,
            admin_port,
            scanning(),
        )
        if gc_tuning:
            tune_gc()
        if started is not None:
            started()
        await stop.wait()
    finally:
        await admin_runner.cleanup()
        await runner.cleanup()  # stops the control-plane loops first
        if shared is not None:
            await shared.close()
        if audit_stream is not None:
            audit_stream.close()


def _report_and_lease(
    api: web.Application,
    identity: controlplane_client.Identity,
    reporter: controlplane_client.UsageReporter,
    shared: aiohttp.BaseConnector | None,
) -> None:
    """Wire the usage reports (health, unreadable keys, budget spend) and, with a budget stage,
    the lease client (budget caps and provider quota shares) into ``api``'s lifecycle."""
    gateway = api[GATEWAY]
    reporter.health = gateway.health
    reporter.missing_credentials = lambda: gateway.credentials.missing(
        gateway.snapshot.routes.values() if gateway.snapshot is not None else ()
    )
    budget = next((s for s in gateway.stages.all if isinstance(s, BudgetStage)), None)
    reporter.budget_spend = budget.spend if budget is not None else None
    api.cleanup_ctx.append(reporter.lifecycle)
    if budget is not None:  # local caps: the operator's leases
        keeper = budget.enable_leases(identity.namespace, identity.pod, reporter.instance)
        keeper.share_quotas(quota_keeper(gateway))  # provider quotas: the same leases
        leases = controlplane_client.LeaseClient(identity, keeper, connector=shared)
        api.cleanup_ctx.append(leases.lifecycle)


def _tracer(endpoint: str | None) -> tracing.Exporter | None:
    """OTLP span export when an endpoint is set and the ``[otel]`` extra is installed."""
    if not endpoint:
        return None
    try:
        return tracing.otlp_exporter(endpoint, _resource(os.environ))
    except ImportError as exc:
        log.error("%s; serving without trace export", exc)
        return None


def _resource(env: Mapping[str, str]) -> dict[str, str]:
    """OpenTelemetry resource attributes of this pod."""
    who = who_from_env(env)
    out = {"k8s.namespace.name": who["namespace"], "k8s.pod.name": who["pod"]}
    return {k: v for k, v in out.items() if v}


def serve(
    config: str | Path | SidecarConfig | ConfigSource,
    host: str = "127.0.0.1",
    port: int = 4000,
    admin_port: int = 4001,
    secrets_dir: str | Path | None = None,
    *,
    admin_host: str = "127.0.0.1",
    audit_log: str | None = "-",
    otlp_endpoint: str | None = None,
    audit_prompts: bool = False,
    header_timeout: float = HEADER_TIMEOUT,
) -> None:
    """Run the sidecar in the foreground until SIGINT/SIGTERM. ``config``: a path to a
    SidecarConfig file (JSON or YAML, watched for changes), a ``SidecarConfig`` or a source."""
    _run(
        serve_async(
            config,
            host,
            port,
            admin_port,
            secrets_dir,
            admin_host=admin_host,
            audit_log=audit_log,
            otlp_endpoint=otlp_endpoint,
            audit_prompts=audit_prompts,
            header_timeout=header_timeout,
            gc_tuning=True,
        )
    )


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sluice_sidecar",
        description="Sluice sidecar: an OpenAI-compatible LLM gateway for one pod.",
    )
    p.add_argument("--config", required=True, help="SidecarConfig file (JSON or YAML); watched")
    p.add_argument("--secrets-dir", default=None, help="directory the API key files live in")
    p.add_argument("--host", default="127.0.0.1", help="API bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4000, help="API port (default 4000)")
    p.add_argument(
        "--admin-host",
        default="127.0.0.1",
        help="admin bind address; 0.0.0.0 in a pod so probes and Prometheus reach it",
    )
    p.add_argument("--admin-port", type=int, default=4001, help="admin port (default 4001)")
    p.add_argument(
        "--audit-log",
        default="-",
        help="audit JSON lines: '-' stdout (default), a file path, or 'none'",
    )
    p.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        help="export spans to this OTLP/HTTP collector (needs sluicegate[otel]; default: off, "
        "or $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / $OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    p.add_argument(
        "--audit-prompts",
        action="store_true",
        help="include the prompt messages in audit records (default: never any prompt text)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT,
        help="seconds a client connection may take to send a whole request head (from its "
        "opening or its previous answer; also the keep-alive idle time; default "
        f"{HEADER_TIMEOUT:g}); request bodies are bounded by the config's limits.bodyTimeout",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    serve(
        args.config,
        args.host,
        args.port,
        args.admin_port,
        args.secrets_dir,
        admin_host=args.admin_host,
        audit_log=args.audit_log,
        otlp_endpoint=args.otlp_endpoint,
        audit_prompts=args.audit_prompts,
        header_timeout=args.header_timeout,
    )
    return 0
