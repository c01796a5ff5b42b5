"""Runs a real sidecar process (``python -m sluice_sidecar``) the way the injector configures it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sluice_cli import devfleet

from .operator_proc import ChildProcess, free_port


@dataclass
class SidecarProcess(ChildProcess):
    port: int
    admin_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def start_sidecar(
    config_file: Path,
    workdir: Path,
    *,
    control_plane: str,
    namespace: str,
    pod: str,
    token_file: Path,
    report_interval: float = 0.5,
    ca_file: Path | None = None,
    audit_log: Path | None = None,
    secrets_dir: Path | None = None,
) -> SidecarProcess:
    """Start a sidecar with the injector's environment (``devfleet.sidecar_env``, shared with
    ``sluice dev fleet``); returns once /readyz says ready.

    ``ca_file``: the control plane's CA (``SLUICE_CONTROL_PLANE_CA``, for an https URL); an
    http URL gets ``SLUICE_CONTROL_PLANE_INSECURE=true``, as only development would set it.
    ``audit_log``: a file for the audit records (complete once the sidecar stopped).
    ``secrets_dir``: the API key files (``<secret>/<key>``, as the injector mounts them)."""
    port, admin = free_port(), free_port()
    log = workdir / f"sidecar-{pod}.log"
    env = devfleet.sidecar_env(
        os.environ,
        control_plane=control_plane,
        ca_pem=ca_file.read_text() if ca_file is not None else None,
        namespace=namespace,
        pod=pod,
        token_file=token_file,
        report_interval=report_interval,
    )
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sluice_sidecar",
                "--config",
                str(config_file),
                f"--port={port}",
                f"--admin-port={admin}",
                f"--audit-log={audit_log or 'none'}",
                *([f"--secrets-dir={secrets_dir}"] if secrets_dir is not None else []),
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    side = SidecarProcess(proc=proc, log=log, port=port, admin_port=admin)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sidecar exited with {proc.returncode}:\n{side.log_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                if r.status == 200:
                    return side
        except OSError:
            time.sleep(0.1)
    side.stop()
    raise RuntimeError(f"sidecar not ready:\n{side.log_text()}")
