"""The store's seam: only ``rag.milvus`` speaks pymilvus, reaches a client or writes filter strings.

``rag.langchain_vectorstore`` is the other Milvus-speaking module by design: it subclasses
``langchain_milvus.Milvus`` and works through that class's own client. Ruff's TID251 rule
(pyproject.toml) bans the import as well; this test also catches ``.client`` and ``filter=``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MILVUS_MODULES = {"rag/milvus.py", "rag/langchain_vectorstore.py"}
CHECKED = ["rag", "ingest", "app_pages", "benchmarks", "tests"]


def python_files() -> list[str]:
    files = [p for folder in CHECKED for p in (ROOT / folder).rglob("*.py")]
    return sorted(str(p.relative_to(ROOT)) for p in files if ".venv" not in p.parts)


def offences(path: Path) -> list[str]:
    """pymilvus imports, ``.client`` / ``._client`` attributes and ``filter=`` keyword arguments."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] == "pymilvus"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pymilvus":
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in {"client", "_client"}:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and any(k.arg == "filter" for k in node.keywords):
            found.append(f"{node.lineno}: filter= argument")
    return found


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from pymilvus import MilvusClient\nimport pymilvus.exceptions\n"
        "store.client.query('c', filter='source == \"a\"')\nstore._client.close()\n"
    )
    assert len(offences(bad)) == 5  # two imports, two clients, one filter string
    good = tmp_path / "good.py"
    good.write_text("store.milvus.count(source='a')\nclient_count = 1\nfrom rag.milvus import Where\n")
    assert offences(good) == []


@pytest.mark.parametrize("name", [f for f in python_files() if f not in MILVUS_MODULES])
def test_only_the_milvus_module_speaks_milvus(name: str) -> None:
    assert offences(ROOT / name) == [], f"{name} reaches past the store's seam"
