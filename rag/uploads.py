"""Saving uploaded files safely inside the data folder before they are ingested."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rag.loading import SUPPORTED_SUFFIXES

_UNSAFE = re.compile(r"[^\w.\- ()]+")
UNWRITTEN = ".writing"  # suffix of an upload's bytes while they are written, before they are staged
RESUMED = ".resumed"  # beside a staging file queued again after a restart: a second restart removes it
_STAGING = re.compile(r"^\..+\.part\.[^.]+$")  # ".NAME.part.pdf", from staging_path


class UploadError(ValueError):
    """An upload that cannot be accepted, with the reason."""


def safe_filename(name: str) -> str:
    """A plain file name: no folders, no '..', no control or shell characters.

    ``../../etc/passwd`` becomes ``passwd``; ``..`` or an empty name is refused.
    """
    name = unicodedata.normalize("NFC", name).replace("\\", "/").split("/")[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name or set(name) <= {"_", "."}:
        raise UploadError("the file name is empty after removing unsafe characters")
    stem, dot, suffix = name.rpartition(".")
    if dot and len(name) > 150:
        name = f"{stem[: 150 - len(suffix) - 1]}.{suffix}"
    return name[:150]


@dataclass(frozen=True)
class StagedUpload:
    """An upload written beside its final place; ``commit`` once it ingested, else ``discard``.

    A failed upload therefore never replaces a good file of the same name.
    """

    name: str
    staging: Path
    target: Path

    @property
    def resumed_mark(self) -> Path:
        """Set when a restart queued this upload again: if the app stops during that attempt too
        (an upload that brings it down, say), the next start removes the upload instead of looping."""
        return self.staging.with_name(self.staging.name + RESUMED)

    def commit(self) -> Path:
        self.staging.replace(self.target)
        self.resumed_mark.unlink(missing_ok=True)
        return self.target

    def discard(self) -> None:
        self.staging.unlink(missing_ok=True)
        self.resumed_mark.unlink(missing_ok=True)


def staging_path(target: Path) -> Path:
    """Where an upload of ``target`` is written until it ingested: a hidden ``.NAME.part.EXT`` beside it."""
    return target.with_name(f".{target.stem}.part{target.suffix}")


def find_staging(uploads_root: Path) -> list[StagedUpload]:
    """Staging files under ``uploads_root`` (an earlier run that stopped mid-ingest left them), as uploads
    to commit or discard. Only meaningful before this process stages any upload of its own."""
    if not uploads_root.is_dir():
        return []
    found = []
    for path in sorted(uploads_root.rglob(".*.part.*")):
        if path.is_file() and _STAGING.match(path.name):
            stem, _, suffix = path.name[1:].rpartition(".part.")
            name = f"{stem}.{suffix}"
            found.append(StagedUpload(name, path, path.with_name(name)))
    return found


def remove_unwritten(uploads_root: Path) -> list[Path]:
    """Remove uploads an earlier run stopped writing (``UNWRITTEN`` files): never whole, never staged."""
    if not uploads_root.is_dir():
        return []
    removed = [path for path in uploads_root.rglob(f".*{UNWRITTEN}") if path.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def stage_upload(name: str, data: bytes, uploads_dir: Path, *, max_bytes: int) -> StagedUpload:
    """Check one uploaded file and write it to a staging file inside ``uploads_dir``."""
    filename = safe_filename(name)
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UploadError(f"unsupported file type '{suffix or '(none)'}'")
    if len(data) > max_bytes:
        raise UploadError(f"the file is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
    uploads_dir.mkdir(parents=True, exist_ok=True)
    target = (uploads_dir / filename).resolve()
    if not target.is_relative_to(uploads_dir.resolve()):
        raise UploadError("the file name points outside the upload folder")
    staging = staging_path(target)
    writing = staging.with_name(staging.name + UNWRITTEN)
    writing.write_bytes(data)
    writing.replace(staging)  # a staging file is whole: the next start may add it again
    return StagedUpload(filename, staging, target)


def remove_upload(source: str, uploads_dir: Path) -> bool:
    """Delete the saved copy of an uploaded document (stored under its plain file name), if any.

    A document ingested from a path elsewhere (``python -m ingest docs/a.pdf``) is left alone.
    """
    try:
        is_upload_name = safe_filename(source) == source
    except UploadError:
        return False
    target = uploads_dir / source
    if not is_upload_name or not target.is_file():
        return False
    target.unlink()
    return True
