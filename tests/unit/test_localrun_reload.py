"""``sluice run`` reloading a folder never fails open: an invalid edit of one object keeps that
object's last valid version in force while other edits apply; deleting it removes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sluice_cli import localrun
from sluice_operator.compile import CompileResult

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01-quickstart"
POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: GuardrailPolicy
metadata:
  name: no-secrets
spec:
  input:
    deny:
      - regex: "{regex}"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "m", ignore=shutil.ignore_patterns("*.md"))
    (tmp_path / "m" / "extra.yaml").write_text(POLICY.format(regex="project (blue|red)bird"))
    return tmp_path / "m"


def _deny(result: CompileResult) -> dict[str, list[str]]:
    return {g.name: [d.regex for d in g.input.deny] for g in result.config.guardrails}


def test_an_invalid_edit_keeps_the_last_valid_version_and_other_edits_apply(
    folder: Path,
) -> None:
    first = localrun.compile_for([folder], None)
    assert not isinstance(first, str)
    assert _deny(first)["no-secrets"] == ["project (blue|red)bird"]
    (folder / "extra.yaml").write_text(POLICY.format(regex="project (blue|red bird"))
    route = folder / "modelroute.yaml"
    route.write_text(route.read_text().replace("attempts: 3", "attempts: 2"))
    result, lines = localrun.reload([folder], None, first)
    assert result is not None
    assert _deny(result)["no-secrets"] == ["project (blue|red)bird"]  # still enforced
    assert "default-filters" in _deny(result)
    assert result.config.routes[0].retry.attempts == 2  # the valid edit applied
    assert any("spec.input.deny[0].regex" in line for line in lines)
    assert any("still enforcing its last valid version" in line for line in lines)
    assert result.keeps("GuardrailPolicy", "no-secrets")
    # deleting the object is what removes its rules
    (folder / "extra.yaml").unlink()
    gone, _ = localrun.reload([folder], None, result)
    assert gone is not None and "no-secrets" not in _deny(gone)


def test_an_object_that_was_never_valid_is_not_in_force(folder: Path) -> None:
    (folder / "extra.yaml").unlink()
    first = localrun.compile_for([folder], None)
    assert not isinstance(first, str)
    (folder / "extra.yaml").write_text(POLICY.format(regex="("))
    result, lines = localrun.reload([folder], None, first)
    assert result is not None and "no-secrets" not in _deny(result)
    assert any("never valid" in line for line in lines)


def test_an_unreadable_file_keeps_the_whole_last_config(folder: Path) -> None:
    first = localrun.compile_for([folder], None)
    assert not isinstance(first, str)
    (folder / "extra.yaml").write_text("kind: [unclosed\n")
    result, lines = localrun.reload([folder], None, first)
    assert result is None and lines[-1] == "keeping the last good config"


def test_a_save_in_progress_is_not_reloaded_until_the_files_stop_changing() -> None:
    """An editor's save truncates, then writes: the watcher reloads what the files hold once
    their fingerprint is the same twice in a row, never the emptied file in between."""
    seen = iter(["written", "written"])  # after the change to "emptied" was noticed
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False  # not stopping

    assert localrun.wait_until_settled("emptied", lambda: next(seen), wait) == "written"
    assert waits == [localrun.SETTLE_SECONDS] * 2
    # Stopping while waiting: nothing to reload.
    assert localrun.wait_until_settled("emptied", lambda: "written", lambda _: True) is None
