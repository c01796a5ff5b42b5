"""Runs the real operator (``python -m sluice_operator.main``) as a child process for tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ChildProcess:
    """A child process the tests started, with its combined stdout/stderr log."""

    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class OperatorProcess(ChildProcess):
    port: int
    #: the CA of the control plane's certificate; None: plain HTTP (--controlplane-insecure-http)
    ca_file: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    def open(self, request: str | urllib.request.Request, timeout: float = 10) -> Any:
        """``urllib.request.urlopen`` on the control plane, verifying its certificate."""
        context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        return urllib.request.urlopen(request, timeout=timeout, context=context)


def start_operator(
    kubeconfig: Path,
    workdir: Path,
    *extra: str,
    standalone: bool = True,
    env: Mapping[str, str] | None = None,
    controlplane_certs: Path | None = None,
) -> OperatorProcess:
    """Start the operator with ``kubeconfig``; returns once its control plane answers.

    ``standalone=False`` leaves out ``--standalone`` (pass ``--peering NAME`` in ``extra``);
    ``env`` adds to (or overrides) the inherited environment, e.g. ``SLUICE_SIDECAR_IMAGE``.
    ``controlplane_certs``: a folder with tls.crt, tls.key and ca.crt for HTTPS (certificate for
    127.0.0.1); without it the control plane is plain HTTP (``--controlplane-insecure-http``).
    """
    port = free_port()
    log = workdir / f"operator-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    child_env.update(env or {})
    child_env["KUBECONFIG"] = str(kubeconfig)
    with log.open("ab") as fh:  # a restart on the same port appends
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sluice_operator.main",
                *(["--standalone"] if standalone else []),
                "--controlplane-host=127.0.0.1",
                f"--controlplane-port={port}",
                *(
                    [f"--controlplane-cert-dir={controlplane_certs}"]
                    if controlplane_certs
                    else ["--controlplane-insecure-http"]
                ),
                "--liveness=",
                "--verbose",
                *extra,
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=child_env,
        )
    ca = controlplane_certs / "ca.crt" if controlplane_certs else None
    op = OperatorProcess(proc=proc, log=log, port=port, ca_file=ca)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited with {proc.returncode}:\n{op.log_text()}")
        try:
            with op.open(f"{op.url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return op
        except OSError:
            time.sleep(0.2)
    op.stop()
    raise RuntimeError(f"operator did not start:\n{op.log_text()}")
