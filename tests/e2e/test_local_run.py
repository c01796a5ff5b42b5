"""`sluice run` and `sluice demo` as a user runs them: real processes, real files, the SDK.

The same manifests that go to a cluster are compiled and served on the laptop; edits to the
folder are picked up, and a broken edit keeps the last good config.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out; last={last!r}")


class Served:
    def __init__(self, args: list[str], log: Path) -> None:
        self.port, self.admin = free_port(), free_port()
        self.log = log
        with log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sluice_cli",
                    *args,
                    f"--port={self.port}",
                    f"--admin-port={self.admin}",
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exited {self.proc.returncode}: {self.text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key="unused", max_retries=0
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "manifests"
    shutil.copytree(REPO / "examples" / "01-quickstart", target)
    route = target / "modelroute.yaml"
    text = route.read_text().replace("failureRate: 0.2", "failureRate: 0")
    route.write_text(
        text.replace("completionTokens: 24", "completionTokens: 24\n        reply: first")
    )
    return target


@pytest.fixture
def served(folder: Path, tmp_path: Path) -> Iterator[Served]:
    s = Served(["run", str(folder)], tmp_path / "run.log")
    try:
        eventually(s.ready)
        yield s
    finally:
        s.stop()


def ask(s: Served) -> str:
    with s.client() as client:
        out = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
    return out.choices[0].message.content or ""


def test_run_serves_the_folder_and_reloads_edits(served: Served, folder: Path) -> None:
    assert ask(served) == "first"
    route = folder / "modelroute.yaml"
    route.write_text(route.read_text().replace("reply: first", "reply: second"))
    eventually(lambda: ask(served) == "second")
    assert "config reloaded" in served.text()


def test_broken_edit_keeps_the_last_good_config(served: Served, folder: Path) -> None:
    route = folder / "modelroute.yaml"
    route.write_text(route.read_text().replace("priority: 1", "priority: -5"))
    eventually(lambda: "still enforcing its last valid version" in served.text())
    assert 'modelroute.yaml: document 1 (ModelRoute "chat"): spec.backends[1].priority' in (
        served.text()
    )
    assert ask(served) == "first"


def test_a_second_run_on_the_same_ports_exits_with_one_line(served: Served, folder: Path) -> None:
    for ports, flag, taken in (
        ([f"--port={free_port()}", f"--admin-port={served.admin}"], "--admin-port", served.admin),
        ([f"--port={served.port}", f"--admin-port={free_port()}"], "--port", served.port),
    ):
        second = subprocess.run(
            [sys.executable, "-m", "sluice_cli", "run", str(folder), *ports],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert second.stderr.splitlines() == [
            f"error: {'API' if flag == '--port' else 'admin (metrics, health)'} port {taken} on "
            f"127.0.0.1 is already in use (another `sluice run`?); choose another with {flag} N"
        ]
    assert ask(served) == "first"  # the first one is unharmed


def test_invalid_folder_serves_nothing_and_says_why(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "r.yaml").write_text(
        "apiVersion: sluice.dev/v1alpha1\nkind: ModelRoute\nmetadata: {name: x}\n"
        "spec: {backends: []}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "sluice_cli", "run", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert 'r.yaml: document 1 (ModelRoute "x"): spec.backends:' in out.stderr
    assert "nothing was served" in out.stderr


def test_demo_prints_ready_to_paste_snippets_and_serves(tmp_path: Path) -> None:
    s = Served(["demo"], tmp_path / "demo.log")
    try:
        eventually(s.ready)
        assert ask(s)
        text = s.text()
        assert f"curl -s http://127.0.0.1:{s.port}/v1/chat/completions" in text
        assert f'OpenAI(base_url="http://127.0.0.1:{s.port}/v1"' in text
    finally:
        s.stop()
