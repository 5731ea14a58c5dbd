"""Benchmark result files: a rerun replaces the figures and keeps the notes written below them."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import write_keeping_notes


def test_rerun_keeps_hand_written_sections(tmp_path: Path) -> None:
    path = tmp_path / "results" / "bench.md"
    write_keeping_notes(path, "# Bench\n\n| a | 1 |\n")
    assert path.read_text() == "# Bench\n\n| a | 1 |\n"
    path.write_text(path.read_text() + "\n## Notes\n\nWhy the figure moved.\n")
    write_keeping_notes(path, "# Bench\n\n| a | 2 |\n")
    assert path.read_text() == "# Bench\n\n| a | 2 |\n\n## Notes\n\nWhy the figure moved.\n"
