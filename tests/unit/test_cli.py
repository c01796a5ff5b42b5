"""The `sluice` command as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def sluice(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluice_cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_render_quickstart_prints_config() -> None:
    out = sluice("render", "examples/01-quickstart")
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert config["apiVersion"] == "sluice.dev/sidecar-config/v1"
    assert [r["name"] for r in config["routes"]] == ["chat"]
    assert out.stdout.startswith("# namespace default, config hash ")


def test_render_json() -> None:
    out = sluice("render", "-o", "json", "examples/01-quickstart")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["namespace"] == "default"


def test_render_every_example_folder() -> None:
    folders = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        out = sluice("render", str(folder))
        assert out.returncode == 0, f"{folder}: {out.stderr}"


BROKEN = """\
apiVersion: sluice.dev/v1alpha1
kind: PromptTemplate
metadata: {name: ok}
spec:
  versions: [{version: 1, messages: [{role: user, content: hi}]}]
---
apiVersion: sluice.dev/v1alpha1
kind: ModelRoute
metadata: {name: chat}
spec:
  backends:
    - {name: a, provider: mock, model: m}
    - {name: b, provider: mock, model: m, weight: 0}
"""


def test_invalid_input_exits_nonzero_with_located_message_and_no_config(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(BROKEN)
    out = sluice("render", "x.yaml", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stdout == ""
    assert (
        'x.yaml: document 2 (ModelRoute "chat"): spec.backends[1].weight: '
        "Input should be greater than or equal to 1" in out.stderr
    )
    assert "Traceback" not in out.stderr


def test_invalid_yaml_is_located(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: ModelRoute\nspec: [unclosed\n")
    out = sluice("render", "bad.yaml", cwd=tmp_path)
    assert out.returncode == 1
    assert "bad.yaml: line 3, column 1: invalid YAML" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_path_is_reported_plainly(tmp_path: Path) -> None:
    for name in ("nope.yaml", "/nonexistent"):
        out = sluice("render", name, cwd=tmp_path)
        assert out.returncode == 1
        assert out.stderr == f"error: {name}: no such file or directory\n"
        assert out.stdout == ""


DANGLING = (
    "apiVersion: sluice.dev/v1alpha1\nkind: PromptTemplate\nmetadata: {name: p}\n"
    "spec:\n  versions:\n  - version: 1\n    route: missing\n"
    "    messages: [{role: user, content: hi}]\n"
)


def test_dangling_reference_warns_but_renders(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(DANGLING)
    out = sluice("render", "p.yaml", cwd=tmp_path)
    assert out.returncode == 0
    assert 'warning: namespace default: PromptTemplate "p": spec.versions[0].route' in out.stderr


def test_render_strict_fails_on_dangling_references_for_ci(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(DANGLING)
    out = sluice("render", "--strict", "p.yaml", cwd=tmp_path)
    assert out.returncode == 1
    assert 'warning: namespace default: PromptTemplate "p": spec.versions[0].route' in out.stderr
    assert "1 problem(s) named above (warnings); failing because of --strict" in out.stderr
    assert sluice("render", "--strict", "examples/01-quickstart").returncode == 0


def test_version() -> None:
    out = sluice("--version")
    assert out.returncode == 0
    assert out.stdout == f"sluice {metadata.version('sluicegate')}\n"


def test_docs_is_a_maintainer_tool_not_a_user_command() -> None:
    out = sluice("docs")
    assert out.returncode == 2
    assert "invalid choice: 'docs'" in out.stderr
    assert "docs" not in sluice("--help").stdout
    maintainer = subprocess.run(
        [sys.executable, "-m", "sluice_cli.maintainer", "docs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert maintainer.returncode == 0, maintainer.stderr
    assert "sluice_cli.maintainer docs" in (REPO / "hack" / "test.sh").read_text()


def test_dev_cluster_flags_match_the_docs() -> None:
    help_text = sluice("dev", "cluster", "--help").stdout
    documented = (REPO / "docs" / "local-cluster.md").read_text()
    options = documented[documented.index("Options: ") :].split("\n\n")[0]
    flags = set(re.findall(r"`(--[a-z-]+)", options))
    assert flags == {"--workdir", "--apply", "--timeout"}
    for flag in flags:
        assert flag in help_text


def test_cryptography_comes_with_the_operator_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["operator"]
    assert any(re.match(r"cryptography\b", req) for req in extra)


@pytest.mark.parametrize(
    ("hidden", "args"),
    [("cryptography", ["dev", "cluster", "--timeout", "1"]), ("kopf", ["operator"])],
)
def test_without_the_operator_extra_says_what_to_install(hidden: str, args: list[str]) -> None:
    code = (
        f"import sys; sys.modules[{hidden!r}] = None\n"
        "from sluice_cli.main import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr == (
        f"error: sluice {args[0] if args[0] == 'operator' else 'dev cluster'} needs {hidden}, "
        "part of the [operator] extra: pip install 'sluicegate[operator]'\n"
    )


def _without_kube_credentials(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")
    env["HOME"] = str(tmp_path)
    return env


def test_operator_without_kubeconfig_exits_with_one_clear_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sluice_cli", "operator"],
        env=_without_kube_credentials(tmp_path),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("sluice operator: no Kubernetes credentials:")
    assert "set KUBECONFIG" in out.stderr
    assert out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def _listening(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_run_on_a_taken_port_says_which_and_the_flag(tmp_path: Path) -> None:
    with _listening(0) as taken:
        busy = taken.getsockname()[1]
        for flags, flag in (
            ([f"--port={busy}", "--admin-port=0"], "--port"),
            (["--port=0", f"--admin-port={busy}"], "--admin-port"),
        ):
            out = subprocess.run(
                [sys.executable, "-m", "sluice_cli", "run", "examples/01-quickstart", *flags],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert out.returncode == 1
            assert f"port {busy} on 127.0.0.1 is already in use" in out.stderr
            assert f"choose another with {flag} N" in out.stderr
            assert out.stderr.count("\n") == 1
            assert "Traceback" not in out.stderr


def test_crds_prints_every_kind_and_check_passes() -> None:
    out = sluice("crds")
    assert out.returncode == 0
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(out.stdout)]
    assert kinds == ["ModelRoute", "PromptTemplate", "Budget", "GuardrailPolicy"]
    assert sluice("crds", "--check").returncode == 0


def test_crds_check_fails_on_stale_folder_with_the_command(tmp_path: Path) -> None:
    (tmp_path / "crds").mkdir()
    (tmp_path / "crds" / "modelroutes.sluice.dev.yaml").write_text("stale\n")
    out = sluice("crds", "--check", "--dir", str(tmp_path / "crds"))
    assert out.returncode == 1
    assert "run `sluice crds --write`" in out.stderr
    assert sluice("crds", "--write", "--dir", str(tmp_path / "crds")).returncode == 0
    assert sluice("crds", "--check", "--dir", str(tmp_path / "crds")).returncode == 0
