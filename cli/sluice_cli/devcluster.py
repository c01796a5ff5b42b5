"""Local control plane for tests and development: a real etcd and kube-apiserver as processes.

This module owns the envtest-style dev cluster: finding (or building, via ``hack/ensure-tools.sh``)
the pinned etcd / kube-apiserver / kubectl / helm binaries, generating a throwaway PKI with
``cryptography``, starting etcd and kube-apiserver on free loopback ports, waiting for readiness,
writing an admin kubeconfig, minting ServiceAccount kubeconfigs, and tearing the processes down
(process groups, plus ``atexit``). The pytest fixtures in ``tests/cluster/conftest.py`` and the
``sluice dev cluster`` command are thin wrappers around :func:`start` and :func:`main_dev_cluster`.

There is no controller-manager, scheduler or kubelet: no default ServiceAccounts, no garbage
collection, namespaces never finish deleting and Pods never run. See ``docs/local-cluster.md``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sluice_operator import pki as pki_x509

__all__ = [
    "TOOL_NAMES",
    "Cluster",
    "DevClusterError",
    "KubectlError",
    "Pki",
    "Process",
    "Tools",
    "ToolsError",
    "cache_dir",
    "ensure_tools",
    "find_repo_root",
    "free_port",
    "main_dev_cluster",
    "read_versions",
    "start",
]

TOOL_NAMES = ("kube-apiserver", "kubectl", "etcd", "helm")
_LOOPBACK = "127.0.0.1"
_STOP_GRACE_SECONDS = 10.0


class DevClusterError(RuntimeError):
    """The dev cluster could not be started, or a step against it failed."""


class ToolsError(DevClusterError):
    """A pinned binary is missing and could not be built."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed; unlike CalledProcessError, str() includes stdout and stderr."""

    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------


def find_repo_root(start_at: Path | None = None) -> Path:
    """The Sluice checkout: ``$SLUICE_REPO``, else the first parent holding hack/versions.env.

    Looks upwards from this file (editable installs), then from ``start_at`` / the cwd.
    """
    env = os.environ.get("SLUICE_REPO")
    if env:
        return Path(env).resolve()
    candidates = [Path(__file__).resolve().parent, (start_at or Path.cwd()).resolve()]
    for base in candidates:
        for parent in (base, *base.parents):
            if (parent / "hack" / "versions.env").is_file():
                return parent
    raise ToolsError(
        "cannot find the Sluice repository (hack/versions.env); run from a checkout or set "
        "SLUICE_REPO"
    )


def read_versions(repo_root: Path | None = None) -> dict[str, str]:
    """The pinned tool versions from hack/versions.env (plain KEY=VALUE lines)."""
    root = repo_root or find_repo_root()
    versions: dict[str, str] = {}
    for raw in (root / "hack" / "versions.env").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    """Where built binaries live: ``$SLUICE_CACHE``, default ``~/.cache/sluice``."""
    return Path(os.environ.get("SLUICE_CACHE") or Path.home() / ".cache" / "sluice")


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the pinned binaries, all in one directory."""

    bin_dir: Path

    @property
    def kube_apiserver(self) -> Path:
        return self.bin_dir / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def etcd(self) -> Path:
        return self.bin_dir / "etcd"

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    def missing(self) -> list[str]:
        return [n for n in TOOL_NAMES if not os.access(self.bin_dir / n, os.X_OK)]


def _expected_bin_dir(versions: Mapping[str, str]) -> Path:
    # Must match BIN in hack/ensure-tools.sh.
    return (
        cache_dir()
        / "bin"
        / (
            f"sluice-k8s-{versions['KUBERNETES_VERSION']}-etcd-{versions['ETCD_VERSION']}"
            f"-helm-{versions['HELM_VERSION']}"
        )
    )


def ensure_tools(repo_root: Path | None = None, *, build: bool = True) -> Tools:
    """Return the pinned tools, running hack/ensure-tools.sh first when any is missing.

    A binary still missing afterwards raises :class:`ToolsError` (callers must fail, not skip).
    ``$SLUICE_BIN_DIR`` overrides the lookup entirely (a directory holding all four tools).
    """
    override = os.environ.get("SLUICE_BIN_DIR")
    if override:
        tools = Tools(Path(override).resolve())
        if tools.missing():
            raise ToolsError(f"SLUICE_BIN_DIR={override} lacks {', '.join(tools.missing())}")
        return tools
    root = repo_root or find_repo_root()
    tools = Tools(_expected_bin_dir(read_versions(root)))
    if not tools.missing():
        return tools
    if not build:
        raise ToolsError(f"missing {', '.join(tools.missing())} in {tools.bin_dir}")
    script = root / "hack" / "ensure-tools.sh"
    # Build logs go to our stderr so a cold build (10-20+ minutes) shows progress.
    proc = subprocess.run(
        ["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False, cwd=root
    )
    if proc.returncode != 0:
        raise ToolsError(f"{script} failed with exit code {proc.returncode}")
    printed = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if printed is not None and printed != tools.bin_dir:
        tools = Tools(printed)
    if tools.missing():
        raise ToolsError(
            f"{script} ran but {', '.join(tools.missing())} missing in {tools.bin_dir}"
        )
    return tools


# --------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------


#: Validity of the throwaway cluster's certificates.
CERT_DAYS = dt.timedelta(days=30)


@dataclass(frozen=True)
class Pki:
    """Throwaway certificates for one cluster: a CA, the apiserver's serving cert, an admin
    client cert (O=system:masters) and the RSA key pair that signs ServiceAccount tokens."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory)
        now = dt.datetime.now(dt.UTC)
        ca_key = pki_x509.new_key("rsa")
        ca = pki_x509.ca_certificate(ca_key, "sluice-dev-ca", now=now, valid_for=CERT_DAYS)
        pki_x509.write_key(pki.ca_key, ca_key)
        pki_x509.write_cert(pki.ca_cert, ca)
        pki.issue(
            "kube-apiserver",
            pki.apiserver_cert,
            pki.apiserver_key,
            hosts=("127.0.0.1", "localhost", "::1"),
            server=True,
        )
        pki.issue(
            "sluice-admin",
            pki.admin_cert,
            pki.admin_key,
            organization="system:masters",
            client=True,
        )
        sa_key = pki_x509.new_key("rsa")
        pki_x509.write_key(pki.sa_key, sa_key)
        pki.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return pki

    def issue(
        self,
        common_name: str,
        cert_path: Path,
        key_path: Path,
        *,
        hosts: Sequence[str] = (),
        organization: str | None = None,
        server: bool = False,
        client: bool = False,
    ) -> tuple[Path, Path]:
        """Sign a leaf certificate with this CA; ``hosts`` become IP or DNS SANs."""
        try:
            ca_key = pki_x509.read_key(self.ca_key)
        except ValueError as exc:
            raise DevClusterError(str(exc)) from exc
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = pki_x509.new_key("rsa")
        cert = pki_x509.leaf_certificate(
            ca_key,
            ca,
            key,
            common_name,
            now=dt.datetime.now(dt.UTC),
            valid_for=CERT_DAYS,
            hosts=hosts,
            organization=organization,
            server=server,
            client=client,
        )
        pki_x509.write_key(key_path, key)
        pki_x509.write_cert(cert_path, cert)
        return cert_path, key_path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_kubeconfig(
    path: Path, server: str, ca_cert: Path, user: Mapping[str, str], *, namespace: str, name: str
) -> Path:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sluice-dev",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [
            {
                "name": f"sluice-dev-{name}",
                "context": {"cluster": "sluice-dev", "user": name, "namespace": namespace},
            }
        ],
        "current-context": f"sluice-dev-{name}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_LOOPBACK, 0))
        return int(s.getsockname()[1])


def free_port() -> int:
    """A loopback TCP port free right now (another process may still take it before use)."""
    return _free_port()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGKILL the child if the process (thread) that started it dies,
    so a SIGKILLed test run does not leave etcd and kube-apiserver behind."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
    ) -> _Process:
        log_file = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                start_new_session=True,  # own process group: killpg reaches everything it forks
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - started before worker threads
            )
        except BaseException:
            log_file.close()
            raise
        return cls(name, popen, log_path, log_file)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the process group without waiting (``stop`` then reaps): lets many
        children shut down at once."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds; reap; close the log."""
        if self.alive():
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, sig)
                try:
                    self.popen.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Reap, and take down anything left in the group (there should be nothing).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5.0)
        self.log_file.close()


def _https_get(
    ctx: ssl.SSLContext, port: int, path: str, timeout: float = 3.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection(_LOOPBACK, port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(_LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


_ADDR_IN_USE = re.compile(r"address already in use", re.IGNORECASE)

#: A child process in its own process group that dies with its parent (``spawn``, ``stop``,
#: ``terminate``, ``alive``, ``log_tail``): what ``sluice dev fleet`` runs the operator and the
#: sidecars as.
Process = _Process


# --------------------------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """A running etcd + kube-apiserver. Create with :func:`start`; stop with :meth:`stop`
    (also a context manager, and registered with ``atexit``)."""

    workdir: Path
    tools: Tools
    pki: Pki
    port: int
    etcd_port: int
    kubeconfig: Path
    _processes: list[_Process] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def server(self) -> str:
        """The apiserver URL, e.g. ``https://127.0.0.1:41234``."""
        return f"https://{_LOOPBACK}:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://{_LOOPBACK}:{self.etcd_port}"

    @property
    def ca_cert(self) -> Path:
        """The cluster CA (PEM): trust it to talk to the apiserver; also signs webhook certs."""
        return self.pki.ca_cert

    @property
    def running(self) -> bool:
        return bool(self._processes) and all(p.alive() for p in self._processes)

    def log_paths(self) -> dict[str, Path]:
        return {p.name: p.log_path for p in self._processes}

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for child processes: KUBECONFIG set, the tools first on PATH."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.tools.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting the cluster CA and presenting the admin client cert."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    # -- kubectl ------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run our pinned kubectl (by absolute path) against this cluster.

        Raises :class:`KubectlError` (stdout and stderr in its message) when ``check`` and the
        exit code is not 0.
        """
        cmd = [
            str(self.tools.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl_json(self, *args: str, kubeconfig: Path | None = None) -> Any:
        """``kubectl ... -o json`` parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", kubeconfig=kubeconfig).stdout)

    # -- namespaces and identities --------------------------------------------------------------

    def create_namespace(self, prefix: str = "t") -> str:
        """Create a namespace with a unique name ``<prefix>-<random>`` and return its name.

        Namespaces never finish deleting here (no controller-manager): use a fresh one per test.
        """
        clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].strip("-") or "t"
        name = f"{clean}-{secrets.token_hex(3)}"
        self.kubectl("create", "namespace", name)
        return name

    def service_account_token(
        self, namespace: str, name: str, *, create: bool = True, duration: str = "2h"
    ) -> str:
        """A bound token for ServiceAccount ``namespace/name`` (created first if ``create``)."""
        if create:
            manifest = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }
            self.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        if not token:
            raise DevClusterError(f"empty token for serviceaccount {namespace}/{name}")
        return token

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        *,
        path: Path | None = None,
        create: bool = True,
        duration: str = "2h",
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount ``namespace/name``."""
        token = self.service_account_token(namespace, name, create=create, duration=duration)
        target = path or self.workdir / "kubeconfigs" / f"sa-{namespace}-{name}.yaml"
        return _write_kubeconfig(
            target,
            self.server,
            self.pki.ca_cert,
            {"token": token},
            namespace=namespace,
            name=f"{namespace}-{name}",
        )

    def issue_serving_cert(
        self, name: str, hosts: Sequence[str] = ("127.0.0.1", "localhost")
    ) -> tuple[Path, Path]:
        """A serving cert + key signed by the cluster CA (e.g. for an admission webhook on
        loopback; use :attr:`ca_cert` as the webhook's caBundle)."""
        d = self.workdir / "certs"
        return self.pki.issue(name, d / f"{name}.crt", d / f"{name}.key", hosts=hosts, server=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd. Idempotent; safe from atexit."""
        with self._lock:
            procs, self._processes = self._processes, []
        for proc in reversed(procs):
            proc.stop()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _etcd_argv(tools: Tools, data_dir: Path, client: int, peer: int) -> list[str]:
    client_url = f"http://{_LOOPBACK}:{client}"
    peer_url = f"http://{_LOOPBACK}:{peer}"
    return [
        str(tools.etcd),
        "--name=sluice-dev",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=sluice-dev={peer_url}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def _apiserver_argv(tools: Tools, pki: Pki, workdir: Path, port: int, etcd_port: int) -> list[str]:
    return [
        str(tools.kube_apiserver),
        f"--etcd-servers=http://{_LOOPBACK}:{etcd_port}",
        f"--bind-address={_LOOPBACK}",
        f"--secure-port={port}",
        f"--advertise-address={_LOOPBACK}",
        "--endpoint-reconciler-type=none",
        f"--cert-dir={workdir / 'apiserver-certs'}",
        f"--tls-cert-file={pki.apiserver_cert}",
        f"--tls-private-key-file={pki.apiserver_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer=https://{_LOOPBACK}:{port}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
    ]


def _wait(
    proc: _Process,
    ready: Callable[[], bool],
    deadline: float,
    what: str,
) -> bool:
    """Poll ``ready()`` until true. False when the process died of a port clash (retry);
    raises on any other death or on timeout."""
    last_error = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            tail = proc.log_tail()
            if _ADDR_IN_USE.search(tail):
                proc.stop()
                return False
            proc.stop()
            raise DevClusterError(
                f"{proc.name} exited with {proc.popen.returncode} before {what}; "
                f"log {proc.log_path}:\n{tail}"
            )
        try:
            if ready():
                return True
        except (OSError, http.client.HTTPException) as exc:
            last_error = repr(exc)
        time.sleep(0.2)
    proc.stop()
    raise DevClusterError(
        f"timed out waiting for {what} (last error: {last_error}); log {proc.log_path}:\n"
        f"{proc.log_tail()}"
    )


def start(
    workdir: Path,
    *,
    tools: Tools | None = None,
    timeout: float = 180.0,
    extra_apiserver_args: Sequence[str] = (),
) -> Cluster:
    """Start a fresh etcd + kube-apiserver under ``workdir`` and return the running cluster.

    ``workdir`` receives pki/, etcd-data/ (wiped first), logs/ and kubeconfig (admin,
    system:masters). Ports are free loopback ports. Builds the tools if missing (slow once).
    """
    tools = tools or ensure_tools()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    pki = Pki.create(workdir / "pki")
    deadline = time.monotonic() + timeout
    procs: list[_Process] = []
    try:
        # etcd, retried if a "free" port got taken between probing and binding.
        etcd_port = 0
        for _attempt in range(5):
            data_dir = workdir / "etcd-data"
            shutil.rmtree(data_dir, ignore_errors=True)
            etcd_port, peer_port = _free_port(), _free_port()
            etcd = _Process.spawn(
                "etcd", _etcd_argv(tools, data_dir, etcd_port, peer_port), logs / "etcd.log"
            )
            port_for_probe = etcd_port

            def etcd_ready(p: int = port_for_probe) -> bool:
                status, body = _http_get(p, "/health")
                return status == 200 and json.loads(body).get("health") == "true"

            if _wait(etcd, etcd_ready, deadline, "etcd /health"):
                procs.append(etcd)
                break
        else:
            raise DevClusterError("could not start etcd: ports kept clashing")

        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        port = 0
        for _attempt in range(5):
            port = _free_port()
            apiserver = _Process.spawn(
                "kube-apiserver",
                [*_apiserver_argv(tools, pki, workdir, port, etcd_port), *extra_apiserver_args],
                logs / "kube-apiserver.log",
            )

            def api_ready(p: int = port) -> bool:
                status, body = _https_get(ctx, p, "/readyz")
                if status != 200 or body.strip() != b"ok":
                    return False
                status, _ = _https_get(ctx, p, "/api/v1/namespaces/default")
                return status == 200

            if _wait(apiserver, api_ready, deadline, "kube-apiserver /readyz + namespace default"):
                procs.append(apiserver)
                break
        else:
            raise DevClusterError("could not start kube-apiserver: ports kept clashing")
    except BaseException:
        for p in reversed(procs):
            p.stop()
        raise

    cluster = Cluster(
        workdir=workdir,
        tools=tools,
        pki=pki,
        port=port,
        etcd_port=etcd_port,
        kubeconfig=workdir / "kubeconfig",
        _processes=procs,
    )
    atexit.register(cluster.stop)
    _write_kubeconfig(
        cluster.kubeconfig,
        cluster.server,
        pki.ca_cert,
        {
            "client-certificate-data": _b64(pki.admin_cert),
            "client-key-data": _b64(pki.admin_key),
        },
        namespace="default",
        name="admin",
    )
    return cluster


@contextlib.contextmanager
def running(workdir: Path, **kwargs: Any) -> Iterator[Cluster]:
    """``with running(dir) as cluster:`` - start, yield, always stop."""
    cluster = start(workdir, **kwargs)
    try:
        yield cluster
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------------------
# CLI: `sluice dev cluster`
# --------------------------------------------------------------------------------------------


def main_dev_cluster(argv: Sequence[str] | None = None) -> int:
    """Start the control plane, print the kubeconfig, and wait for Ctrl-C (or SIGTERM)."""
    parser = argparse.ArgumentParser(
        prog="sluice dev cluster",
        description="Run a local etcd + kube-apiserver (no nodes, no controllers) until Ctrl-C.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to keep certs, etcd data, logs and the kubeconfig (default: a new temp dir; "
        "etcd data is wiped on every start)",
    )
    parser.add_argument(
        "--apply",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="kubectl apply -f PATH once the cluster is up (repeatable; e.g. --apply crds/)",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="startup timeout, seconds")
    args = parser.parse_args(list(argv) if argv is not None else None)

    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="sluice-dev-cluster-"))
    print(f"starting etcd + kube-apiserver in {workdir} ...", file=sys.stderr, flush=True)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    # Started in the background by a non-interactive shell, SIGINT arrives ignored: restore it.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    cluster: Cluster | None = None
    try:
        cluster = start(workdir, timeout=args.timeout)
        for path in args.apply:
            cluster.kubectl("apply", "--server-side", "-f", str(path))
        print(f"kube-apiserver {cluster.server} (etcd {cluster.etcd_url})")
        print(f"kubeconfig: {cluster.kubeconfig}")
        print(f"logs: {workdir / 'logs'}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"export PATH={cluster.tools.bin_dir}:$PATH")
        print("Ctrl-C to stop.", flush=True)
        while cluster.running:
            time.sleep(1.0)
        print("a control-plane process exited; see the logs above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except DevClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()
            print("stopped.", file=sys.stderr)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":
    sys.exit(main_dev_cluster())
