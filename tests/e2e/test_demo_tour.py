"""`sluice demo`: every call the banner prints is run as printed, in a shell, and keeps its promise.

The calls are taken from the demo's own output (the lines under each numbered step), so the tour
a newcomer pastes and the README's quick start cannot drift from what the demo serves.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from sluice_cli import tour

from .test_local_run import Served, eventually


def printed_calls(text: str) -> dict[str, str]:
    """The shell line under each numbered step of the banner, keyed like ``tour.CALLS``."""
    lines = text.splitlines()
    found: dict[str, str] = {}
    for n, call in enumerate(tour.CALLS, 1):
        at = lines.index(f"{n}. {call.title}")
        found[call.key] = lines[at + 1].strip()
        assert lines[at + 2].strip() == f"-> {call.promise}"
    return found


def sh(line: str) -> str:
    out = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, timeout=60, check=False
    )
    return out.stdout


def test_each_printed_call_keeps_its_promise(tmp_path: Path) -> None:
    assert shutil.which("curl"), "the tour's calls use curl"
    s = Served(["demo"], tmp_path / "demo.log")
    try:
        eventually(s.ready)
        calls = printed_calls(s.text())
        assert calls == tour.commands("127.0.0.1", s.port, s.admin)

        assert sh(calls["prompt"]).strip().lower() == "x-sluice-prompt-version: support@1"

        sh(calls["redact"])

        def audit_line() -> dict[str, object] | None:
            for line in s.text().splitlines():
                if line.startswith("{") and '"redact-email"' in line:
                    return dict(json.loads(line))
            return None

        record = eventually(audit_line)
        assert record["guardrails"] == [
            {
                "policy": "redact-email",
                "stage": "input",
                "check": "pii",
                "action": "Redact",
                "mode": "Enforce",
                "enforced": True,
                "entities": {"EMAIL": 1},
            }
        ]
        audit = [x for x in s.text().splitlines() if x.startswith("{")]
        assert not any("jane.doe@example.com" in x for x in audit)  # never logged either

        headers = sh(calls["fallback"]).lower().split()
        assert headers == ["x-sluice-backend:", "backup", "x-sluice-attempts:", "2"]

        assert sh(calls["budget"]).split() == ["200", "429"]
        assert sh(calls["ratelimit"]).split() == ["200", "200", "429"]

        metrics = sh(calls["metrics"])
        assert re.search(
            r'^sluice_requests_total\{code="429",.*route="metered"\} 1\.0$', metrics, re.M
        )
        assert re.search(
            r'^sluice_requests_total\{code="429",.*route="limited"\} 1\.0$', metrics, re.M
        )
        assert re.search(r'^sluice_fallbacks_total\{.*route="flaky".*\} 1\.0$', metrics, re.M)
    finally:
        s.stop()


def test_the_readme_quick_start_shows_the_same_calls() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for key, line in tour.commands("127.0.0.1", 4000, 4001).items():
        assert line in readme, f"README's quick start lacks the {key} call:\n{line}"
