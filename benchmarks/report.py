"""Writing a benchmark's result file without losing the notes people added below it."""

from __future__ import annotations

from pathlib import Path

NOTES_START = "\n## "  # generated parts use one top heading; hand-written sections start at the next level


def write_keeping_notes(path: Path, generated: str) -> None:
    """Replace the generated part of ``path`` (up to its first ``## `` heading) with ``generated``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.is_file() else ""
    cut = old.find(NOTES_START)
    notes = old[cut:] if cut >= 0 else ""
    path.write_text(generated.rstrip("\n") + "\n" + notes)
