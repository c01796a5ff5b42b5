"""`sluice render` and `sluice crds` as a user runs them: a real process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_missing_path_is_reported(tmp_path: Path) -> None:
    out = sluice("render", "nope.yaml", cwd=tmp_path)
    assert out.returncode == 1
    assert "nope.yaml: cannot read" in out.stderr


def test_dangling_reference_warns_but_renders(tmp_path: Path) -> None:
    text = (
        "apiVersion: sluice.dev/v1alpha1\nkind: PromptTemplate\nmetadata: {name: p}\n"
        "spec:\n  versions:\n  - version: 1\n    route: missing\n"
        "    messages: [{role: user, content: hi}]\n"
    )
    (tmp_path / "p.yaml").write_text(text)
    out = sluice("render", "p.yaml", cwd=tmp_path)
    assert out.returncode == 0
    assert 'warning: namespace default: PromptTemplate "p": spec.versions[0].route' in out.stderr


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
