"""Runs the real operator (``python -m sluice_operator.main``) as a child process for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_operator(
    kubeconfig: Path,
    workdir: Path,
    *extra: str,
    standalone: bool = True,
    env: Mapping[str, str] | None = None,
) -> OperatorProcess:
    """Start the operator with ``kubeconfig``; returns once its control plane answers.

    ``standalone=False`` leaves out ``--standalone`` (pass ``--peering NAME`` in ``extra``);
    ``env`` adds to (or overrides) the inherited environment, e.g. ``SLUICE_SIDECAR_IMAGE``.
    """
    port = free_port()
    log = workdir / f"operator-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    child_env.update(env or {})
    child_env["KUBECONFIG"] = str(kubeconfig)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sluice_operator.main",
                *(["--standalone"] if standalone else []),
                "--controlplane-host=127.0.0.1",
                f"--controlplane-port={port}",
                "--liveness=",
                "--verbose",
                *extra,
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=child_env,
        )
    op = OperatorProcess(proc=proc, log=log, port=port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited with {proc.returncode}:\n{op.log_text()}")
        try:
            with urllib.request.urlopen(f"{op.url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return op
        except OSError:
            time.sleep(0.2)
    op.stop()
    raise RuntimeError(f"operator did not start:\n{op.log_text()}")
