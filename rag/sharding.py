"""Split one corpus between ingest workers: ``python -m ingest --shard K/N PATH...``.

Each file belongs to exactly one of N shards, chosen by the SHA-1 of the name it is stored
under (``rag.loading.source_key``), so N workers given the same paths from the same folder
take disjoint shares that together cover every file, on any machine and in any run (Python's
``hash()`` of a string changes from one process to the next). Workers can then ingest into one
Milvus server together: no file is ingested twice, and the collection ends up as one run's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rag.loading import source_key
from rag.pipeline import collect_files

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard ``k`` of ``n``, counting from 1."""

    k: int
    n: int

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    def owns(self, source: str) -> bool:
        return shard_index(source, self.n) == self.k - 1


def shard_index(source: str, n: int) -> int:
    """The shard (0 to n-1) of a stored source name; the same everywhere and always."""
    return int.from_bytes(hashlib.sha1(source.encode("utf-8")).digest()[:8], "big") % n


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; a clear ``ValueError`` for anything else."""
    match = _SHARD.fullmatch(text)
    if match is None:
        raise ValueError(f"expected K/N, such as 2/4 (worker 2 of 4), not {text!r}")
    k, n = int(match[1]), int(match[2])
    if n < 1:
        raise ValueError(f"N in {k}/{n} is the number of workers: at least 1")
    if not 1 <= k <= n:
        raise ValueError(f"K in {k}/{n} must be between 1 and {n}: workers count from 1")
    return Shard(k, n)


def shard_paths(paths: Iterable[str | Path], shard: Shard) -> list[str | Path]:
    """The files under ``paths`` that belong to ``shard``, plus every argument that matched nothing
    (so that each worker reports it as failed, as one run would)."""
    files, missing = collect_files(paths)
    return [*(f for f in files if shard.owns(source_key(f))), *(m.source for m in missing)]
