"""Benchmark result files: a rerun replaces the figures and keeps the notes written below them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.report import publish, write_figures, write_keeping_notes


def test_rerun_keeps_hand_written_sections(tmp_path: Path) -> None:
    path = tmp_path / "results" / "bench.md"
    write_keeping_notes(path, "# Bench\n\n| a | 1 |\n")
    assert path.read_text() == "# Bench\n\n| a | 1 |\n"
    path.write_text(path.read_text() + "\n## Notes\n\nWhy the figure moved.\n")
    write_keeping_notes(path, "# Bench\n\n| a | 2 |\n")
    assert path.read_text() == "# Bench\n\n| a | 2 |\n\n## Notes\n\nWhy the figure moved.\n"


def test_publish_prints_writes_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "results" / "bench.md"
    path.parent.mkdir()
    path.write_text("# Bench\n\n| a | 1 |\n\n## Notes\n\nKept.\n")
    publish(path, "# Bench\n\n| a | 2 |\n")
    out, err = capsys.readouterr()
    assert out == "# Bench\n\n| a | 2 |\n\n"
    assert err == f"written to {path}\n"
    assert path.read_text() == "# Bench\n\n| a | 2 |\n\n## Notes\n\nKept.\n"


def test_figures_are_saved_beside_the_report(tmp_path: Path) -> None:
    figures = {"figures": {"ratio": 0.95, "load": ["1.0 2.0 3.0"]}, "command": "python -m benchmarks.x"}
    saved = write_figures(tmp_path / "new" / "bench.md", figures, indent=1)
    assert saved == tmp_path / "new" / "bench.json"
    assert json.loads(saved.read_text()) == figures
    assert saved.read_text().startswith('{\n "figures": {\n  "ratio"') and saved.read_text().endswith("}\n")
    assert not (tmp_path / "new" / "bench.md").exists()  # the report is written by publish, after rendering
