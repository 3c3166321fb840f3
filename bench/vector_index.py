"""Which vector index for `tailored compare`'s RAG: faiss-cpu, hnswlib, usearch against numpy brute force.

Every library indexes the same unit vectors (384 dims, all-MiniLM-L6-v2's size; clustered random
vectors, plus the real MiniLM embeddings of banking77's training queries when ../shared/data is here)
and answers the same queries for the top 5 by inner product. numpy brute force is the reference:
recall@5 is the share of its top 5 each library returns, and times are ratios to it.

    OMP_NUM_THREADS=1 nice -n 10 python bench/vector_index.py [--sizes 2000,20000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

K = 5


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, n // 50), d)).astype("float32")
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, d)).astype("float32")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_brute(x, q, folder):
    t = time.perf_counter()
    np.save(folder / "np.npy", x, allow_pickle=False)
    build = time.perf_counter() - t
    t = time.perf_counter()
    scores = q @ x.T
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    return build, time.perf_counter() - t, top, (folder / "np.npy").stat().st_size


def faiss_flat(x, q, folder):
    import faiss

    t = time.perf_counter()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    faiss.write_index(index, str(folder / "flat.faiss"))
    build = time.perf_counter() - t
    t = time.perf_counter()
    _, top = index.search(q, K)
    return build, time.perf_counter() - t, top, (folder / "flat.faiss").stat().st_size


def faiss_hnsw(x, q, folder):
    import faiss

    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(x)
    faiss.write_index(index, str(folder / "hnsw.faiss"))
    build = time.perf_counter() - t
    index.hnsw.efSearch = 64
    t = time.perf_counter()
    _, top = index.search(q, K)
    return build, time.perf_counter() - t, top, (folder / "hnsw.faiss").stat().st_size


def hnswlib_index(x, q, folder):
    import hnswlib

    t = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=x.shape[1])
    index.init_index(max_elements=len(x), ef_construction=80, M=32, random_seed=0)
    index.add_items(x, np.arange(len(x)), num_threads=1)
    index.save_index(str(folder / "hnswlib.bin"))
    build = time.perf_counter() - t
    index.set_ef(64)
    t = time.perf_counter()
    top, _ = index.knn_query(q, k=K, num_threads=1)
    return build, time.perf_counter() - t, top, (folder / "hnswlib.bin").stat().st_size


def usearch_index(x, q, folder):
    from usearch.index import Index

    t = time.perf_counter()
    index = Index(ndim=x.shape[1], metric="ip", dtype="f32", connectivity=32, expansion_add=80, expansion_search=64)
    index.add(np.arange(len(x)), x, threads=1)
    index.save(str(folder / "usearch.bin"))
    build = time.perf_counter() - t
    t = time.perf_counter()
    found = index.search(q, K, threads=1)
    return build, time.perf_counter() - t, np.asarray(found.keys), (folder / "usearch.bin").stat().st_size


LIBRARIES = {"numpy brute force (reference)": numpy_brute, "faiss-cpu IndexFlatIP (exact)": faiss_flat,
             "faiss-cpu IndexHNSWFlat": faiss_hnsw, "hnswlib": hnswlib_index, "usearch": usearch_index}


def real_vectors() -> np.ndarray | None:
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77" / "train.jsonl"
    if not path.is_file():
        return None
    from tailored.models.embeddings import Embedder

    texts = [json.loads(line)["messages"][1]["content"] for line in path.read_text().splitlines() if line.strip()]
    return Embedder().encode(texts).numpy().astype("float32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sets = [(f"clustered random, n={n}", clustered(n, 384, seed=n)) for n in map(int, args.sizes.split(","))]
    real = real_vectors()
    if real is not None:
        sets.insert(0, (f"MiniLM of banking77 train queries, n={len(real)}", real))
    print("| vectors | library | build + save s | query ms/query | × numpy query time | recall@5 | file MB |")
    print("|---|---|---|---|---|---|---|")
    for name, x in sets:
        rng = np.random.default_rng(1)
        q = x[rng.integers(0, len(x), args.queries)] + 0.05 * rng.standard_normal((args.queries, x.shape[1])).astype("float32")
        q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype("float32")
        with tempfile.TemporaryDirectory() as tmp:
            ref = None
            for lib, fn in LIBRARIES.items():
                build, query, top, size = fn(x, q, Path(tmp))
                if ref is None:
                    ref, ref_time = [set(map(int, row)) for row in top], query
                recall = np.mean([len(ref[i] & set(map(int, row))) / K for i, row in enumerate(top)])
                print(f"| {name} | {lib} | {build:.3f} | {1000 * query / len(q):.3f} | {query / ref_time:.2f} | "
                      f"{recall:.3f} | {size / 1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()
