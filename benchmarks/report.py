"""Writing a benchmark's result files: its report, keeping the notes people added below it, and its figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NOTES_START = "\n## "  # generated parts use one top heading; hand-written sections start at the next level


def write_keeping_notes(path: Path, generated: str) -> None:
    """Replace the generated part of ``path`` (up to its first ``## `` heading) with ``generated``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.is_file() else ""
    cut = old.find(NOTES_START)
    notes = old[cut:] if cut >= 0 else ""
    path.write_text(generated.rstrip("\n") + "\n" + notes)


def write_figures(path: Path, data: Any, *, indent: int = 2) -> Path:
    """Save a run's figures beside its report (``path`` with ``.json``), so the report can be written again
    (or compared) without rerunning; call it before rendering, so a failed render loses no long run."""
    saved = path.with_suffix(".json")
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(data, indent=indent) + "\n")
    return saved


def publish(path: Path, text: str) -> None:
    """Print a benchmark's report, write it to ``path`` keeping the notes below it, and say where (on stderr)."""
    print(text)
    write_keeping_notes(path, text)
    print(f"written to {path}", file=sys.stderr)
