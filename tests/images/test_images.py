"""The real images: built by hack/build-images.sh (buildah, vfs, chroot isolation; no daemon, no
registry), then run and inspected as a node would run them.

- the sidecar image's entrypoint serves a rendered config and answers HTTP requests, unary and
  streamed, filtered by the guardrail modules it compiled with mypyc;
- the sidecar image's venv loads the native scanner (sluice_native, built from native/ on the
  host) with the image's own interpreter and libraries;
- the operator image's entrypoint prints its version;
- the image config: the non-root UID the injector's securityContext runs as, an exec-form
  entrypoint with an absolute path and no shell anywhere in the image, the OCI labels;
- sizes against the limits of issue 14 (sidecar <= 120 MB, operator <= 250 MB), no pip, no
  package manager, no build network CA left behind.

hack/test.sh builds the images before pytest; the fixture below runs the script again, which
returns at once when the images are current (and builds them when this file is run alone).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_operator.inject.settings import NONROOT_UID

from .test_compiled_wheel import COMPILED

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
MB = 1000 * 1000
LIMITS = {"sidecar": 120 * MB, "operator": 250 * MB}
ENV = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
#: What the mock backends answer in the sidecar image test (the quickstart redacts both).
PERSONAL_REPLY = "Write to ana@example.com or pay with 4111 1111 1111 1111 today."


def bh(*args: str, check: bool = True) -> str:
    out = subprocess.run(
        ["buildah", "--storage-driver", "vfs", *args],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)}: {out.returncode}\n{out.stderr}")
    return out.stdout


def git_head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()


#: HEAD when the fixture ran the script (empty outside a git checkout).
BUILT_AT: list[str] = []


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """{"sidecar": ref, "operator": ref}: built (or found current) by hack/build-images.sh."""
    head = git_head()
    if head:
        BUILT_AT.append(head)
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "build-images.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    refs = out.stdout.split()
    found = {name: ref for ref in refs for name in LIMITS if f"/sluice-{name}:" in ref}
    assert set(found) == set(LIMITS), refs
    return found


def config(ref: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bh("inspect", "--type", "image", ref))["OCIv1"]["config"]
    return data


class Container:
    """A working container of an image (`buildah from`), its root mounted for inspection."""

    def __init__(self, ref: str) -> None:
        self.name = bh("from", "--pull=false", ref).strip()
        self.root = Path(bh("mount", self.name).strip())

    def remove(self) -> None:
        bh("umount", self.name, check=False)
        bh("rm", self.name, check=False)

    def run_args(self, *args: str, volume: str | None = None) -> list[str]:
        """`buildah run` as the image's configured user (buildah's default)."""
        cmd = ["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot"]
        if volume:
            cmd += ["--volume", volume]
        return [*cmd, self.name, "--", *args]


@pytest.fixture
def container(images: dict[str, str]) -> Iterator[Any]:
    made: list[Container] = []

    def make(name: str) -> Container:
        made.append(Container(images[name]))
        return made[-1]

    yield make
    for c in made:
        c.remove()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sidecar_image_serves_a_config_and_answers(
    container: Any, images: dict[str, str], tmp_path: Path
) -> None:
    """The entrypoint, as the injector runs it: --config, ports, admin host; real requests.

    The quickstart's mock backends answer with personal data, so the answers pass through the
    guardrail modules the image compiled with mypyc (the quickstart redacts e-mail addresses and
    card numbers in answers): unary, and streamed a word per event through the holdback."""
    example = tmp_path / "example"
    shutil.copytree(REPO / "examples" / "01-quickstart", example)
    route = example / "modelroute.yaml"
    route.write_text(
        re.sub(
            r"(?m)^(\s+)(completionTokens: \d+)$",
            lambda m: f"{m[1]}{m[2]}\n{m[1]}reply: {json.dumps(PERSONAL_REPLY)}",
            route.read_text(),
        )
    )
    assert route.read_text().count("reply:") == 2
    rendered = subprocess.run(
        ["sluice", "render", str(example), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.json").write_text(rendered)
    conf.chmod(0o755)
    (conf / "config.json").chmod(0o644)
    c = container("sidecar")
    entrypoint = config(images["sidecar"])["Entrypoint"]
    port, admin = free_port(), free_port()
    log = tmp_path / "sidecar.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            c.run_args(
                *entrypoint,
                "--config=/etc/sluice/config.json",
                f"--port={port}",
                f"--admin-port={admin}",
                "--admin-host=127.0.0.1",
                volume=f"{conf}:/etc/sluice:ro",
            ),
            env=ENV,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        body = json.dumps(
            {"model": "chat", "messages": [{"role": "user", "content": "hello from an image"}]}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200
            answer = json.loads(r.read())
        assert answer["object"] == "chat.completion"
        assert answer["model"] in {"mock-large", "mock-small"}
        unary = answer["choices"][0]["message"]["content"]
        assert "Write to" in unary and "4111" not in unary and "ana@" not in unary, unary
        streamed = json.loads(body) | {"stream": True}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(streamed).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            events = [
                line.removeprefix(b"data: ")
                for line in r.read().splitlines()
                if line.startswith(b"data: ")
            ]
        assert events[-1] == b"[DONE]", events[-3:]
        text = "".join(
            choice["delta"].get("content") or ""
            for event in events[:-1]
            for choice in json.loads(event)["choices"]
        )
        assert text == unary, (text, unary)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def _python_in(c: Any, code: str, *, check: bool) -> subprocess.CompletedProcess[str]:
    """``code`` run by the image's interpreter in a container of it, as the injected UID."""
    return subprocess.run(
        c.run_args("/opt/venv/bin/python", "-c", code),
        env=ENV,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def test_sidecar_image_runs_as_the_injected_uid_and_trusts_the_public_cas(
    container: Any,
) -> None:
    c = container("sidecar")
    probe = (
        "import os, ssl; print(os.getuid(), os.getgid(),"
        " ssl.create_default_context().cert_store_stats()['x509_ca'])"
    )
    out = _python_in(c, probe, check=True).stdout.split()
    assert out[:2] == [str(NONROOT_UID), str(NONROOT_UID)]
    # Debian's Mozilla set: upstream HTTPS providers verify against it.
    assert int(out[2]) > 100


def test_sidecar_image_loads_the_native_scanner(container: Any) -> None:
    """The wheel built on the host (hack/native-wheel.sh) loads in the final stage: the image's
    interpreter, glibc and nothing else (no libpcre2: PCRE2 is compiled in), as the injected UID."""
    c = container("sidecar")
    # maturin's package: __init__.py imports the extension module beside it. And the guardrails
    # take it up (they fall back to Python where it is missing).
    probe = (
        "import sluice_native, sluice_native.sluice_native as ext; print(ext.__file__);"
        " from sluice_sidecar.guardrails import native;"
        " print(native.module() is not None)"
    )
    out = _python_in(c, probe, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    path, used = out.stdout.split()
    assert used == "True", out.stdout
    assert path.startswith("/opt/venv/lib/python3.11/site-packages/sluice_native/"), path
    assert path.endswith(".abi3.so"), path


def test_operator_image_prints_its_version(container: Any, images: dict[str, str]) -> None:
    c = container("operator")
    cfg = config(images["operator"])
    assert cfg["Cmd"] == ["operator"]
    out = subprocess.run(
        c.run_args(*cfg["Entrypoint"], "--version"),
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == f"sluice {VERSION}"


@pytest.mark.parametrize("name", ["sidecar", "operator"])
def test_image_config(name: str, images: dict[str, str], container: Any) -> None:
    cfg = config(images[name])
    # The numeric UID:GID the injected securityContext (and the chart's operator pod) runs as, so
    # the kubelet can verify runAsNonRoot.
    assert cfg["User"] == f"{NONROOT_UID}:{NONROOT_UID}"
    # Exec form, absolute path: no shell and no PATH lookup to start; and there is no shell.
    entrypoint = cfg["Entrypoint"]
    assert entrypoint[0].startswith("/opt/venv/bin/"), entrypoint
    c = container(name)
    target = c.root / entrypoint[0].lstrip("/")
    assert os.access(target, os.X_OK), target
    if not entrypoint[0].endswith("/python"):
        # a console script: its #! names the venv's interpreter, not a shell
        shebang = target.read_text().splitlines()[0]
        assert re.fullmatch(r"#!/opt/venv/bin/python3?", shebang), shebang
    for shell in ("bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "bin/busybox"):
        assert not (c.root / shell).exists(), shell
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == f"sluice-{name}"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.source"]
    # The commit built: HEAD when the script ran (the fixture, just now).
    revision = labels["org.opencontainers.image.revision"].removesuffix("-dirty")
    if BUILT_AT:
        assert revision == BUILT_AT[0], (revision, BUILT_AT)
    # The chart's default image references are exactly what the script builds and tags.
    chart = yaml.safe_load((REPO / "charts/sluice/Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts/sluice/values.yaml").read_text())
    image = values["image"] if name == "operator" else values["sidecar"]["image"]
    assert chart["appVersion"] == VERSION
    assert images[name] == f"{image['repository']}:{image['tag'] or chart['appVersion']}"


@pytest.mark.parametrize("name", ["sidecar", "operator"])
def test_image_size_and_contents(name: str, container: Any) -> None:
    c = container(name)
    size = sum((Path(d) / f).lstat().st_size for d, _, files in os.walk(c.root) for f in files)
    print(f"sluice-{name}: {size / MB:.1f} MB")
    assert size <= LIMITS[name], f"{size / MB:.1f} MB > {LIMITS[name] / MB:.0f} MB"
    site = c.root / "opt/venv/lib/python3.11/site-packages"
    # The interpreter and the venv; no installer, no package manager, no docs.
    assert not list(site.glob("pip*")), "pip in the image"
    assert not list(site.glob("setuptools*")), "setuptools in the image"
    assert not list((c.root / "opt/venv/bin").glob("pip*"))
    for gone in ("usr/bin/dpkg", "usr/bin/apt-get", "usr/share/doc", "usr/share/man"):
        assert not (c.root / gone).exists(), gone
    if name == "sidecar":
        assert not (site / "kopf").exists()
        assert not (site / "sluice_operator").exists()
        # The guardrails' text scanning, compiled by mypyc (that build is tested against the
        # guardrail tests in test_compiled_wheel.py), and their one shared library.
        for module in COMPILED:
            assert list(site.glob(module.removesuffix(".py") + ".cpython-311-*.so")), module
        assert list(site.glob("*__mypyc.cpython-311-*.so"))
        # The native scanner: maturin's package dir with the abi3 extension module in it.
        assert list(site.glob("sluice_native/sluice_native*.so")), "no native scanner"
    # The build network's CA bundle (a build secret) is not in the image: neither the secret
    # mount nor any locally added CA (where such a CA lives on this machine) in the trust store.
    assert not (c.root / "run/secrets/build_ca").exists()
    bundle = (c.root / "etc/ssl/certs/ca-certificates.crt").read_text()
    for local in Path("/usr/local/share/ca-certificates").glob("**/*.crt"):
        body = re.sub(r"-----[A-Z ]+-----|\s", "", local.read_text())
        assert body[:64] not in re.sub(r"\s", "", bundle), f"{local} is in the image"
