"""docs/sidecar.md's generated tables are current: the field x provider table (from the
translators' ``FIELDS``) and the client compatibility table (``clients_matrix.MATRIX``, whose every
cell ``test_clients.py`` runs). Regenerate with ``python -m tests.sidecar.test_compat_docs``."""

from __future__ import annotations

import re
from pathlib import Path

from sluice_sidecar.translate import openai_anthropic, openai_gemini

from . import clients_matrix

DOC = Path(__file__).resolve().parents[2] / "docs" / "sidecar.md"


def render_fields() -> str:
    """The field x provider table: how each canonical (OpenAI chat) field reaches each backend."""
    names = sorted(set(openai_anthropic.FIELDS) | set(openai_gemini.FIELDS))
    lines = [
        "| field | openai, mistral, openai-compatible | anthropic | gemini |",
        "|---|---|---|---|",
    ]
    for name in names:
        cells = [
            "passed",
            openai_anthropic.FIELDS.get(name, "refused: no such field"),
            openai_gemini.FIELDS.get(name, "refused: no such field"),
        ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines.append("| any other field | passed | refused: no such field | refused: no such field |")
    return "\n".join(lines)


SECTIONS = {"fields": render_fields, "clients": clients_matrix.render}


def _span(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:begin -->\n)(.*?)(\n<!-- {name}:end -->)", re.S)


def rewrite(text: str) -> str:
    for name, render in SECTIONS.items():
        text = _span(name).sub(lambda m, r=render: m.group(1) + r() + m.group(3), text)  # type: ignore[misc]
    return text


def test_generated_tables_are_current() -> None:
    text = DOC.read_text()
    for name in SECTIONS:
        assert _span(name).search(text), f"docs/sidecar.md lacks the {name} table markers"
    assert rewrite(text) == text, "stale tables: run python -m tests.sidecar.test_compat_docs"


def test_every_matrix_cell_is_works_or_a_refusal() -> None:
    for cells in clients_matrix.MATRIX.values():
        assert set(cells) == set(clients_matrix.BACKENDS)
        for cell in cells.values():
            assert cell.startswith(("works", "400", "502"))


if __name__ == "__main__":
    DOC.write_text(rewrite(DOC.read_text()))
