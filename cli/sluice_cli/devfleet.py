"""``sluice dev fleet``: the cluster story on a laptop - control plane, operator and N sidecars.

Owns starting, and stopping in reverse order, everything an injected namespace has, as local
processes: the dev cluster (``devcluster``: etcd + kube-apiserver), the CRDs, the user's
manifests applied into one namespace, the operator (a child process, ``--out-of-cluster
--standalone``, its control plane on loopback over HTTPS with a certificate from the cluster's
CA), and N sidecar processes (``python -m sluice_sidecar``). Each sidecar is registered as a pod
of the namespace the way the injector would have made it: a Pod object (no kubelet: it stays
Pending), a ServiceAccount token bound to that pod with audience ``sluice`` (TokenRequest with
``boundObjectRef``; renewed before it expires, as the kubelet does), its labels in a downward-API
file, the namespace's ConfigMap as its boot config, and the injector's environment
(``sidecar_env``, the same names as ``sluice_operator.inject.patch.sidecar_container``). So every
sidecar pulls config pushes and posts usage reports to the operator like an injected one.

The pieces are public so tests and benches can reuse them (``pod_identity``, ``sidecar_env``,
``controlplane_certs``, ``operator_argv``); tests may import this module, never the reverse.
Nothing here talks to a real cluster: the only apiserver it touches is the one it started.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import secrets as secrets_module
import shutil
import signal
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from sluice_operator import configmap

from . import cpcount, devcluster
from .devcluster import Cluster, DevClusterError, Process

LOOPBACK = "127.0.0.1"
AUDIENCE = "sluice"  # the control plane's token audience (sluice_operator.controlplane.AUDIENCE)
CONFIGMAP = configmap.NAME  # the namespace's compiled config
SERVICE_ACCOUNT = "fleet"
POD_PREFIX = "fleet"
TOKEN_SECONDS = 3600
TOKEN_RENEW_AFTER = 1800.0  # the kubelet renews at 80% of the lifetime; half is enough here
INJECTED_LABEL = "sluice.dev/injected"  # what `sluice status` lists pods by
OPERATOR_STOP_GRACE = 5.0


class FleetError(DevClusterError):
    """The fleet could not be started; ``str()`` is one line saying what to do."""


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------


def load_manifests(paths: Sequence[str | Path], namespace: str | None) -> tuple[list[Any], str]:
    """The documents to apply (validated first, as ``sluice render`` does) and the namespace.

    The namespace is ``namespace`` when given, else the one the manifests name, else
    ``default``; documents without one are put in it, a document naming another is an error.
    """
    from sluice_operator import manifests

    absent = manifests.missing(paths)
    if absent:
        raise FleetError(f"{absent[0]}: no such file or directory")
    resources, errors = manifests.load_paths(paths)
    if errors:
        more = f" (and {len(errors) - 1} more; `sluice render` lists them)" if errors[1:] else ""
        raise FleetError(f"{errors[0]}{more}")
    if not resources:
        raise FleetError(
            "no Sluice resources (apiVersion sluice.dev/v1alpha1) in " + ", ".join(map(str, paths))
        )
    docs: list[tuple[str, dict[str, Any]]] = []
    for file in manifests.expand(paths):
        for index, doc in enumerate(yaml.safe_load_all(file.read_text(encoding="utf-8")), 1):
            if isinstance(doc, dict):
                docs.append((f"{file}: document {index}", doc))
    named = sorted({str(d["metadata"]["namespace"]) for _, d in docs if _namespace_of(d)})
    if namespace is None:
        if len(named) > 1:
            raise FleetError(
                f"the manifests name several namespaces ({', '.join(named)}); a fleet runs one: "
                "pass --namespace"
            )
        namespace = named[0] if named else "default"
    out: list[Any] = []
    for origin, doc in docs:
        own = _namespace_of(doc)
        if own and own != namespace:
            raise FleetError(
                f"{origin}: metadata.namespace is {own!r}, not {namespace!r}; drop it or pass "
                f"--namespace {own}"
            )
        meta = dict(doc.get("metadata") or {})
        meta["namespace"] = namespace
        out.append({**doc, "metadata": meta})
    return out, namespace


def _namespace_of(doc: Mapping[str, Any]) -> str | None:
    meta = doc.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    return str(ns) if ns else None


# --------------------------------------------------------------------------------------------
# The apiserver, directly (fast enough for 1,000 pods; kubectl for the rest)
# --------------------------------------------------------------------------------------------


class Admin(Protocol):
    """An apiserver on loopback and an SSL context that is admin there: a ``Cluster``, or
    ``admin_of`` a running fleet's ready file (another process's cluster)."""

    @property
    def port(self) -> int: ...

    def ssl_context(self) -> ssl.SSLContext: ...


@dataclass(frozen=True)
class AdminEndpoint:
    port: int
    context: ssl.SSLContext

    def ssl_context(self) -> ssl.SSLContext:
        return self.context


def admin_of(ready: Mapping[str, Any]) -> AdminEndpoint:
    """Admin access to the cluster of a fleet from its ``--ready-file`` (the PKI in its
    workdir), for tests and benches that drive a fleet started by another process."""
    pki = devcluster.Pki(Path(ready["workdir"]) / "pki")
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return AdminEndpoint(int(str(ready["apiserver"]).rsplit(":", 1)[1]), context)


def api(
    cluster: Admin, method: str, path: str, body: Any = None, *, timeout: float = 30.0
) -> tuple[int, Any]:
    """One JSON request to the cluster's apiserver as admin: (status, parsed body)."""
    conn = http.client.HTTPSConnection(
        LOOPBACK, cluster.port, context=cluster.ssl_context(), timeout=timeout
    )
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw) if raw else None
    except ValueError:
        return resp.status, raw.decode(errors="replace")


def _ok(status: int, body: Any, what: str) -> Any:
    if status >= 300:
        message = body.get("message") if isinstance(body, Mapping) else body
        raise FleetError(f"{what}: HTTP {status}: {message}")
    return body


def ensure_service_account(cluster: Admin, namespace: str, name: str) -> None:
    status, body = api(
        cluster,
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    if status != 409:
        _ok(status, body, f"creating serviceaccount {namespace}/{name}")


@dataclass(frozen=True)
class PodIdentity:
    """A Pod object registered for a sidecar, and a token bound to it (audience sluice)."""

    namespace: str
    pod: str
    uid: str
    service_account: str
    labels: Mapping[str, str]
    token: str


def pod_identity(
    cluster: Admin,
    namespace: str,
    pod: str,
    *,
    service_account: str = SERVICE_ACCOUNT,
    labels: Mapping[str, str] | None = None,
    token_seconds: int = TOKEN_SECONDS,
) -> PodIdentity:
    """Create Pod ``pod`` (it never runs: no kubelet) and mint a token bound to it, as the
    kubelet projects into an injected pod. The ServiceAccount must exist."""
    labels = {
        INJECTED_LABEL: "true",
        "app.kubernetes.io/name": "sluice-dev-fleet",
        **(labels or {}),
    }
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "namespace": namespace, "labels": labels},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "app", "image": "example.invalid/app:dev"}],
        },
    }
    created = _ok(
        *api(cluster, "POST", f"/api/v1/namespaces/{namespace}/pods", manifest),
        f"creating pod {namespace}/{pod}",
    )
    uid = str(created["metadata"]["uid"])
    token = bound_token(
        cluster, namespace, pod, uid, service_account=service_account, seconds=token_seconds
    )
    return PodIdentity(namespace, pod, uid, service_account, labels, token)


def bound_token(
    cluster: Admin,
    namespace: str,
    pod: str,
    uid: str,
    *,
    service_account: str = SERVICE_ACCOUNT,
    seconds: int = TOKEN_SECONDS,
) -> str:
    """A TokenRequest for ``service_account`` bound to the pod (name and uid), audience sluice."""
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [AUDIENCE],
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid},
        },
    }
    got = _ok(
        *api(
            cluster,
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            request,
        ),
        f"requesting a token for pod {namespace}/{pod}",
    )
    return str(got["status"]["token"])


def controlplane_certs(cluster: Cluster, directory: Path) -> Path:
    """``tls.crt``/``tls.key`` for 127.0.0.1 and ``ca.crt`` (the cluster CA) in ``directory``,
    the way the chart mounts the control plane's certificate Secret."""
    crt, key = cluster.issue_serving_cert(f"controlplane-{secrets_module.token_hex(3)}")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(crt, directory / "tls.crt")
    shutil.copy(key, directory / "tls.key")
    shutil.copy(cluster.pki.ca_cert, directory / "ca.crt")
    return directory


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The inherited environment minus in-cluster hints (``KUBERNETES_*``) and our own
    ``SLUICE_*``/``POD_*`` identity, so a child sees only what is set for it."""
    src = os.environ if base is None else base
    return {
        k: v
        for k, v in src.items()
        if not k.startswith(("KUBERNETES_", "POD_", "SLUICE_CONTROL_PLANE_", "SLUICE_TOKEN"))
    }


def operator_argv(port: int, cert_dir: Path | None, *extra: str) -> list[str]:
    """The operator out of cluster, standalone, its control plane on ``127.0.0.1:port``
    (HTTPS with ``cert_dir``; plain HTTP without, development only)."""
    return [
        sys.executable,
        "-m",
        "sluice_operator.main",
        "--out-of-cluster",
        "--standalone",
        f"--controlplane-host={LOOPBACK}",
        f"--controlplane-port={port}",
        *(
            [f"--controlplane-cert-dir={cert_dir}"]
            if cert_dir
            else ["--controlplane-insecure-http"]
        ),
        "--liveness=",
        *extra,
    ]


def sidecar_env(
    base: Mapping[str, str],
    *,
    control_plane: str,
    ca_pem: str | None,
    namespace: str,
    pod: str,
    token_file: Path,
    uid: str | None = None,
    service_account: str | None = None,
    labels_file: Path | None = None,
    report_interval: float | None = None,
) -> dict[str, str]:
    """The injector's environment for a sidecar (``inject.patch.sidecar_container``): the
    downward-API identity, the token and labels files, the control plane's URL and CA (what is
    None is left out, as for a pod whose uid or labels a test does not care about). An
    ``http://`` URL gets ``SLUICE_CONTROL_PLANE_INSECURE=true`` (development only);
    ``report_interval`` sets ``SLUICE_REPORT_INTERVAL`` (the injector leaves the default)."""
    env = dict(base)
    env.update(
        POD_NAME=pod,
        POD_NAMESPACE=namespace,
        SLUICE_TOKEN_FILE=str(token_file),
        SLUICE_CONTROL_PLANE_URL=control_plane,
    )
    optional = {
        "POD_UID": uid,
        "POD_SERVICE_ACCOUNT": service_account,
        "SLUICE_POD_LABELS_FILE": str(labels_file) if labels_file else None,
    }
    env.update({k: v for k, v in optional.items() if v})
    if ca_pem:
        env["SLUICE_CONTROL_PLANE_CA"] = ca_pem
    if control_plane.startswith("http://"):
        env["SLUICE_CONTROL_PLANE_INSECURE"] = "true"
    if report_interval is not None:
        env["SLUICE_REPORT_INTERVAL"] = str(report_interval)
    return env


def labels_text(labels: Mapping[str, str]) -> str:
    """The kubelet's downward-API ``metadata.labels`` file: ``key="value"`` lines, sorted."""
    return "".join(f"{k}={json.dumps(v)}\n" for k, v in sorted(labels.items()))


def _http_ok(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:  # noqa: S310
            return int(r.status) == 200
    except (OSError, http.client.HTTPException):
        return False


def _wait_until(ready: Callable[[], bool], proc: Process, deadline: float, what: str) -> None:
    while time.monotonic() < deadline:
        if not proc.alive():
            raise FleetError(
                f"{what} exited with code {proc.popen.returncode} while starting; "
                f"log: {proc.log_path}\n{proc.log_tail(15)}"
            )
        if ready():
            return
        time.sleep(0.2)
    raise FleetError(f"{what} did not become ready in time; log: {proc.log_path}")


# --------------------------------------------------------------------------------------------
# The fleet
# --------------------------------------------------------------------------------------------


@dataclass
class Sidecar:
    identity: PodIdentity
    port: int
    admin_port: int
    process: Process
    token_file: Path
    audit_log: Path
    token_minted: float = field(default_factory=time.monotonic)
    reported_exit: bool = False

    @property
    def pod(self) -> str:
        return self.identity.pod

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/v1"

    def describe(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "uid": self.identity.uid,
            "url": self.url,
            "port": self.port,
            "adminUrl": f"http://{LOOPBACK}:{self.admin_port}",
            "pid": self.process.popen.pid,
            "tokenFile": str(self.token_file),
            "auditLog": str(self.audit_log),
            "log": str(self.process.log_path),
        }


@dataclass
class Fleet:
    """A running fleet; stop with :meth:`stop` (sidecars, then the operator, then the cluster)."""

    cluster: Cluster
    namespace: str
    workdir: Path
    config_file: Path
    operator: Process | None = None
    operator_port: int = 0
    ca_file: Path | None = None
    sidecars: list[Sidecar] = field(default_factory=list)
    #: ``--count-calls``: the counting pass-through the sidecars talk to instead of the operator
    counter: cpcount.CallCounter | None = None

    @property
    def operator_url(self) -> str:
        return f"https://{LOOPBACK}:{self.operator_port}"

    @property
    def control_plane_url(self) -> str:
        """What the sidecars' ``SLUICE_CONTROL_PLANE_URL`` says: the operator, or the counter."""
        return self.counter.url if self.counter is not None else self.operator_url

    def operator_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def describe(self) -> dict[str, Any]:
        """What the ready file holds: everything a test or bench needs to drive the fleet."""
        return {
            "namespace": self.namespace,
            "kubeconfig": str(self.cluster.kubeconfig),
            "apiserver": self.cluster.server,
            "workdir": str(self.workdir),
            "config": str(self.config_file),
            "operator": {
                "url": self.operator_url,
                "ca": str(self.ca_file) if self.ca_file else None,
                "metrics": f"{self.operator_url}/metrics",
                "pid": self.operator.popen.pid if self.operator else None,
                "log": str(self.operator.log_path) if self.operator else None,
            },
            "controlPlane": {
                "url": self.control_plane_url,
                "calls": f"{self.counter.url}/fleet/calls" if self.counter else None,
            },
            "sidecars": [s.describe() for s in self.sidecars],
            "pid": os.getpid(),
        }

    def renew_tokens(self, now: float | None = None) -> None:
        """Re-mint tokens older than ``TOKEN_RENEW_AFTER`` (the sidecar re-reads the file)."""
        now = time.monotonic() if now is None else now
        for side in self.sidecars:
            if now - side.token_minted < TOKEN_RENEW_AFTER:
                continue
            ident = side.identity
            token = bound_token(
                self.cluster,
                ident.namespace,
                ident.pod,
                ident.uid,
                service_account=ident.service_account,
            )
            _write_private(side.token_file, token)
            side.token_minted = now

    def stop(self) -> None:
        """Sidecars first (all at once), then the operator, then etcd + kube-apiserver."""
        for side in self.sidecars:
            side.process.terminate()
        for side in self.sidecars:
            side.process.stop()
        if self.counter is not None:
            self.counter.stop()
        if self.operator is not None:
            # kopf takes up to ~30 s to wind down its watches on SIGTERM; the cluster goes
            # away next, so there is nothing left for it to write: a short grace, then SIGKILL.
            self.operator.stop(grace=OPERATOR_STOP_GRACE)
        self.cluster.stop()


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)  # atomic: a sidecar never reads half a token


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _apply(cluster: Cluster, docs: Sequence[Any], what: str, *args: str) -> None:
    proc = cluster.kubectl(
        "apply",
        *args,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}),
        check=False,
    )
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()] or ["(no message)"]
        raise FleetError(f"applying {what} failed: {lines[0]}")


def _install_crds(cluster: Cluster) -> None:
    from sluice_operator import crdgen

    docs = list(yaml.safe_load_all(crdgen.render_stream()))
    _apply(cluster, [d for d in docs if d], "the CRDs", "--server-side")
    names = [d["metadata"]["name"] for d in docs if d]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names]
    )


def _start_operator(
    cluster: Cluster, workdir: Path, deadline: float, verbose: bool
) -> tuple[Process, int, Path]:
    cert_dir = controlplane_certs(cluster, workdir / "controlplane-certs")
    env = child_env()
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
    for _attempt in range(3):
        port = devcluster.free_port()
        extra = ("--verbose",) if verbose else ()
        proc = Process.spawn(
            "operator",
            operator_argv(port, cert_dir, *extra),
            workdir / "logs" / "operator.log",
            env=env,
        )
        try:
            _wait_until(
                functools.partial(_http_ok, f"https://{LOOPBACK}:{port}/healthz", context),
                proc,
                deadline,
                "the operator",
            )
        except FleetError:
            if "address already in use" in proc.log_tail(40).lower():
                proc.stop()
                continue
            proc.stop()
            raise
        return proc, port, cert_dir / "ca.crt"
    raise FleetError("could not start the operator: its control-plane port kept clashing")


def _wait_config(cluster: Cluster, namespace: str, deadline: float, operator: Process) -> str:
    path = f"/api/v1/namespaces/{namespace}/configmaps/{CONFIGMAP}"
    while time.monotonic() < deadline:
        if not operator.alive():
            raise FleetError(
                f"the operator exited with code {operator.popen.returncode}; "
                f"log: {operator.log_path}"
            )
        status, body = api(cluster, "GET", path)
        if status == 200 and (body.get("data") or {}).get(configmap.KEY):
            return str(body["data"][configmap.KEY])
        time.sleep(0.3)
    raise FleetError(
        f"the operator wrote no ConfigMap {namespace}/{CONFIGMAP} in time; log: {operator.log_path}"
    )


def _spawn_sidecar(
    fleet: Fleet,
    ident: PodIdentity,
    secrets_dir: Path | None,
    report_interval: float | None,
) -> Sidecar:
    pods = fleet.workdir / "pods" / ident.pod
    pods.mkdir(parents=True, exist_ok=True)
    token_file, labels_file = pods / "token", pods / "labels"
    _write_private(token_file, ident.token)
    labels_file.write_text(labels_text(ident.labels), encoding="utf-8")
    ca_pem = fleet.ca_file.read_text(encoding="utf-8") if fleet.ca_file else None
    env = sidecar_env(
        child_env(),
        control_plane=fleet.control_plane_url,
        ca_pem=ca_pem,
        namespace=ident.namespace,
        pod=ident.pod,
        uid=ident.uid,
        service_account=ident.service_account,
        token_file=token_file,
        labels_file=labels_file,
        report_interval=report_interval,
    )
    port, admin = devcluster.free_port(), devcluster.free_port()
    audit = pods / "audit.jsonl"
    argv = [
        sys.executable,
        "-m",
        "sluice_sidecar",
        "--config",
        str(fleet.config_file),
        f"--port={port}",
        f"--admin-port={admin}",
        f"--audit-log={audit}",
    ]
    if secrets_dir is not None:
        argv.append(f"--secrets-dir={secrets_dir}")
    proc = Process.spawn(f"sidecar {ident.pod}", argv, pods / "sidecar.log", env=env)
    return Sidecar(ident, port, admin, proc, token_file, audit)


def _wait_sidecar(
    fleet: Fleet,
    side: Sidecar,
    deadline: float,
    secrets_dir: Path | None,
    report_interval: float | None,
) -> Sidecar:
    """Wait for /readyz; a sidecar that lost its port to another process is started again."""
    for _attempt in range(3):
        try:
            _wait_until(
                functools.partial(_http_ok, f"http://{LOOPBACK}:{side.admin_port}/readyz"),
                side.process,
                deadline,
                f"the sidecar of pod {side.pod}",
            )
            return side
        except FleetError:
            clash = "address already in use" in side.process.log_tail(40).lower()
            side.process.stop()
            if not clash:
                raise
            side = _spawn_sidecar(fleet, side.identity, secrets_dir, report_interval)
    raise FleetError(f"could not start the sidecar of pod {side.pod}: its ports kept clashing")


def start(
    paths: Sequence[str | Path],
    replicas: int,
    *,
    namespace: str | None = None,
    workdir: Path,
    timeout: float = 180.0,
    report_interval: float | None = None,
    secrets_dir: Path | None = None,
    verbose: bool = False,
    count_calls: bool = False,
    progress: Callable[[str], None] = _say,
) -> Fleet:
    """Start the whole fleet under ``workdir``; on any failure everything started is stopped
    and :class:`FleetError` (or ``DevClusterError``) says why. ``count_calls`` puts a counting
    pass-through (``cpcount``) between the sidecars and the operator."""
    if replicas < 1:
        raise FleetError("--replicas must be at least 1")
    docs, namespace = load_manifests(paths, namespace)
    tools = devcluster.ensure_tools()
    deadline = time.monotonic() + timeout
    workdir = workdir.resolve()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    progress(f"starting etcd + kube-apiserver in {workdir} ...")
    cluster = devcluster.start(workdir, tools=tools, timeout=timeout)
    fleet = Fleet(cluster, namespace, workdir, workdir / configmap.KEY)
    try:
        progress("installing the CRDs and applying the manifests ...")
        _install_crds(cluster)
        if namespace != "default":
            status, body = api(
                cluster,
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
            if status != 409:
                _ok(status, body, f"creating namespace {namespace}")
        progress("starting the operator ...")
        fleet.operator, fleet.operator_port, fleet.ca_file = _start_operator(
            cluster, workdir, deadline, verbose
        )
        # Applied once the operator runs, as on a cluster where it is installed first: a Budget
        # it sees created before its own start would wait out a predecessor's leases (one TTL).
        _apply(cluster, docs, "the manifests")
        if count_calls:
            assert fleet.ca_file is not None
            fleet.counter = cpcount.CallCounter(
                fleet.operator_url, fleet.ca_file.parent, devcluster.free_port()
            )
            fleet.counter.start()
        fleet.config_file.write_text(
            _wait_config(cluster, namespace, deadline, fleet.operator), encoding="utf-8"
        )
        progress(f"starting {replicas} sidecar(s) ...")
        ensure_service_account(cluster, namespace, SERVICE_ACCOUNT)
        for index in range(replicas):
            ident = pod_identity(cluster, namespace, f"{POD_PREFIX}-{index}")
            fleet.sidecars.append(_spawn_sidecar(fleet, ident, secrets_dir, report_interval))
        for index, side in enumerate(fleet.sidecars):
            fleet.sidecars[index] = _wait_sidecar(
                fleet, side, deadline, secrets_dir, report_interval
            )
    except BaseException:
        fleet.stop()
        raise
    return fleet


@contextlib.contextmanager
def running(paths: Sequence[str | Path], replicas: int, **kwargs: Any) -> Iterator[Fleet]:
    """``with running(paths, 3, workdir=d) as fleet:`` - start, yield, always stop."""
    fleet = start(paths, replicas, **kwargs)
    try:
        yield fleet
    finally:
        fleet.stop()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main_dev_fleet(argv: Sequence[str] | None = None) -> int:
    """``python -m sluice_cli.devfleet ARGS`` is ``sluice dev fleet ARGS`` (flags: main.py)."""
    from .main import main

    return main(["dev", "fleet", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace) -> int:
    """``sluice dev fleet``: start, print the sidecars and the kubeconfig, wait for a signal."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    # Started in the background by a non-interactive shell, SIGINT arrives ignored: restore it.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    own_workdir = args.workdir is None
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="sluice-dev-fleet-"))
    fleet: Fleet | None = None
    code = 1
    try:
        secrets_dir = args.secrets_dir.resolve() if args.secrets_dir.is_dir() else None
        fleet = start(
            args.paths,
            args.replicas,
            namespace=args.namespace,
            workdir=workdir,
            timeout=args.timeout,
            report_interval=args.report_interval,
            secrets_dir=secrets_dir,
            verbose=args.verbose,
            count_calls=args.count_calls,
        )
        _announce(fleet, args.ready_file)
        code = _watch(fleet)
    except KeyboardInterrupt:
        code = 0
    except (DevClusterError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        print(f"error: {first}", file=sys.stderr)
        rest = str(exc).strip().splitlines()[1:]
        if rest:
            print("\n".join(rest), file=sys.stderr)
        code = 1
    finally:
        # a second Ctrl-C must not interrupt the stop half way
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if fleet is not None:
                _say("stopping ...")
                fleet.stop()
            if args.ready_file is not None:
                with contextlib.suppress(OSError):
                    args.ready_file.unlink()
            started = (workdir / "logs").is_dir()
            if own_workdir and (code == 0 or not started):
                shutil.rmtree(workdir, ignore_errors=True)
            elif code != 0:
                _say(f"logs kept in {workdir}")
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
    if fleet is not None and code == 0:
        _say("stopped.")
    return code


def _announce(fleet: Fleet, ready_file: Path | None) -> None:
    """The lines on stdout (the contract: ``sidecar <pod> <url>`` each, ``kubeconfig <path>``),
    the hints on stderr, then the ready file (written whole, atomically)."""
    print(f"operator {fleet.operator_url} (ca {fleet.ca_file})")
    if fleet.counter is not None:
        print(f"calls {fleet.counter.url}/fleet/calls")
    for side in fleet.sidecars:
        print(f"sidecar {side.pod} {side.url}")
    print(f"kubeconfig {fleet.cluster.kubeconfig}", flush=True)
    _say(
        f"namespace {fleet.namespace}; logs in {fleet.workdir}; "
        f"export KUBECONFIG={fleet.cluster.kubeconfig}; Ctrl-C to stop."
    )
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps(fleet.describe(), indent=2), encoding="utf-8")
        tmp.replace(ready_file)


def _watch(fleet: Fleet) -> int:
    """Until a signal: say once when a sidecar exits; end (1) when the operator or the
    control plane does; renew the pods' tokens."""
    assert fleet.operator is not None
    while True:
        time.sleep(0.5)
        if not fleet.cluster.running:
            _say(f"error: etcd or kube-apiserver exited; logs in {fleet.workdir / 'logs'}")
            return 1
        if not fleet.operator.alive():
            _say(
                f"error: the operator exited with code {fleet.operator.popen.returncode}; "
                f"log: {fleet.operator.log_path}"
            )
            return 1
        for side in fleet.sidecars:
            if not side.reported_exit and not side.process.alive():
                side.reported_exit = True
                _say(
                    f"sidecar {side.pod} exited with code {side.process.popen.returncode}; "
                    f"log: {side.process.log_path}"
                )
        try:
            fleet.renew_tokens()
        except (FleetError, OSError) as exc:
            _say(f"warning: renewing the pods' tokens failed: {exc}")


if __name__ == "__main__":
    sys.exit(main_dev_fleet())
