"""Several separate document sets (collections) on one Milvus, each with its own embedding model.

The app's sidebar and ``python -m ingest --list-collections / --delete-collection`` call these.
A collection is this app's when it records an embedding model and has the document fields;
other collections on a shared Milvus are left out and never deleted. Deleting a collection
also removes the uploaded copies of its documents (``Settings.uploads_dir``), after the drop,
so a failed drop loses nothing.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass

from rag.config import DEFAULT_COLLECTION, Settings
from rag.milvus import MilvusCollection
from rag.uploads import remove_upload

# Milvus's own rule for collection names (letters, digits, underscores; not starting with a digit).
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


class CollectionError(ValueError):
    """A collection name that cannot be used, or a collection that is not there; the message says which."""


@dataclass(frozen=True)
class CollectionInfo:
    """One of this app's collections, as listed."""

    name: str
    documents: int
    chunks: int
    embedding_model: str
    dimension: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CollectionDeletion:
    """What ``delete_collection`` removed."""

    name: str
    documents: int
    chunks: int
    uploads_removed: int


def check_name(name: str) -> str:
    """The name, stripped, if Milvus accepts it; else a ``CollectionError`` saying what is allowed."""
    name = name.strip()
    if not NAME_PATTERN.fullmatch(name):
        raise CollectionError(
            f"'{name}' cannot name a collection: use letters, digits and underscores (at most 255), "
            "starting with a letter or an underscore, for example 'contracts_2024'"
        )
    return name


def settings_for(settings: Settings, name: str) -> Settings:
    """The same settings on collection ``name``."""
    return settings.model_copy(update={"collection": name})


def _is_ours(collection: MilvusCollection) -> tuple[bool, dict[str, str], dict]:
    info = collection.describe()
    meta, fields = collection.metadata(info), collection.fields(info)
    return ("rag.embedding_model" in meta and {"vector", "doc_hash"} <= set(fields)), meta, fields


def collection_names(settings: Settings) -> list[str]:
    """Names of this app's collections on the configured Milvus, sorted (cheap: no counting)."""
    milvus = MilvusCollection(settings).connect()
    try:
        return [name for name in milvus.collection_names() if _is_ours(milvus.sibling(name))[0]]
    finally:
        milvus.close()


def list_collections(settings: Settings) -> list[CollectionInfo]:
    """This app's collections with their document and chunk counts and recorded embedding model."""
    milvus = MilvusCollection(settings).connect()
    found = []
    try:
        for name in milvus.collection_names():
            collection = milvus.sibling(name)
            ours, meta, fields = _is_ours(collection)
            if not ours:
                continue
            dimension = int(fields["vector"].get("params", {}).get("dim", 0))
            found.append(
                CollectionInfo(
                    name=name,
                    documents=collection.count(first_chunks=True),
                    chunks=collection.count(),
                    embedding_model=meta["rag.embedding_model"],
                    dimension=dimension,
                )
            )
    finally:
        milvus.close()
    return found


def find_collection(settings: Settings, name: str) -> CollectionInfo:
    """One of this app's collections by name; ``CollectionError`` if it is missing or someone else's."""
    found = {c.name: c for c in list_collections(settings)}
    if name in found:
        return found[name]
    milvus = MilvusCollection(settings_for(settings, name)).connect()
    try:
        exists = milvus.exists()
    finally:
        milvus.close()
    if exists:
        raise CollectionError(f"the collection '{name}' was not made by this app; it is left alone")
    raise CollectionError(f"there is no collection named '{name}' (collections: {', '.join(found) or 'none'})")


def delete_collection(settings: Settings, name: str) -> CollectionDeletion:
    """Drop one of this app's collections and remove the uploaded copies of its documents.

    Raises ``CollectionError`` for a collection that does not exist or was not made by this app."""
    target = settings_for(settings, name)
    milvus = MilvusCollection(target).connect()
    try:
        if not milvus.exists():
            known = ", ".join(collection_names(settings)) or "none"
            raise CollectionError(f"there is no collection named '{name}' (collections: {known})")
        if not _is_ours(milvus)[0]:
            raise CollectionError(f"the collection '{name}' was not made by this app; it is left alone")
        sources = sorted({row["source"] for row in milvus.rows(["source"], first_chunks=True)})
        chunks = milvus.count()
        milvus.drop()
    finally:
        milvus.close()
    removed = sum(remove_upload(source, target.uploads_dir) for source in sources)
    if name != DEFAULT_COLLECTION and target.uploads_dir.is_dir():
        shutil.rmtree(target.uploads_dir, ignore_errors=True)  # the folder is this collection's alone
    return CollectionDeletion(name, len(sources), chunks, removed)
