"""Vector search alone, from 10k to 1M vectors: exact (flat inner product) against the store's HNSW.

The collection starts with the real chunk embeddings of the bench store (about 30k, so the 10k and
30k points are real data); past them come Gaussian-perturbed copies of random real vectors,
renormalised (cosine to their original about 0.86 with the default noise), 384-d float32 like the
model's. Queries are held out: embeddings of questions drawn from the corpus, never in the index.

Both indexes are the embedded backend's own: built by its index factory with the configured
`hnsw_m`, `efConstruction` and `efSearch`, wrapped in IDMap2 as in the store, so the figures are
those of the index the store switches to past `exact_search_max`. Each size is reached by adding
to the same indexes (HNSW build time is cumulative). Latency is one query at a time, asking for
`search_k` neighbours as the retriever does, with FAISS's default OpenMP threads (as the store
searches today) and with one thread: on a shared two-core machine a one-query search that opens
a parallel region (the flat scan, IDMap2's id translation) waits for a second core, so the two
differ. Recall@10 compares HNSW's top 10 with exact search's; an efSearch sweep (one thread) says
what each setting costs and buys.
"""

from __future__ import annotations

import gc
import time

import faiss
import numpy as np

from bench.common import MB, Progress, latency_summary, rss_mb

DEFAULT_SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
DEFAULT_EF_SWEEP = (16, 32, 64, 128, 256, 512)


def synthetic_collection(base: np.ndarray, size: int, *, noise: float = 0.6, seed: int = 0,
                         block: int = 100_000) -> np.ndarray:
    """`size` unit vectors: the real ones first, then perturbed copies of random real ones.

    `noise` is the expected norm of the Gaussian perturbation before renormalising (0.6: a copy's
    cosine to its original is about 1/sqrt(1 + 0.36) = 0.86).
    """
    base = np.ascontiguousarray(base, dtype=np.float32)
    n0, dim = base.shape
    out = np.empty((size, dim), dtype=np.float32)
    take = min(n0, size)
    out[:take] = base[:take]
    rng = np.random.default_rng(seed)
    sigma = noise / np.sqrt(dim)
    for start in range(take, size, block):
        stop = min(size, start + block)
        picks = rng.integers(0, n0, stop - start)
        part = base[picks] + rng.standard_normal((stop - start, dim), dtype=np.float32) * sigma
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        out[start:stop] = part
    return out


def _indexes(dim: int, settings: dict) -> tuple[faiss.Index, faiss.Index, dict]:
    """An exact and an approximate index exactly as the embedded backend builds them."""
    from index.store.sqlite import empty_faiss_index

    exact = empty_faiss_index(dim, 0, **settings)
    approx = empty_faiss_index(dim, settings["exact_search_max"] + 1, **settings)
    hnsw = faiss.downcast_index(approx.index)
    params = {"M": settings["hnsw_m"], "efConstruction": int(hnsw.hnsw.efConstruction),
              "efSearch": int(hnsw.hnsw.efSearch), "metric": "inner product", "wrapper": "IndexIDMap2"}
    return exact, approx, params


def _set_ef(index: faiss.Index, ef: int) -> None:
    faiss.downcast_index(index.index).hnsw.efSearch = ef


def _hnsw_bytes(index: faiss.Index) -> int:
    """Vectors plus graph links, levels and offsets, from the index's own arrays."""
    inner = faiss.downcast_index(index.index)
    graph = inner.hnsw
    return (inner.ntotal * inner.d * 4 + graph.neighbors.size() * 4 + graph.levels.size() * 4
            + graph.offsets.size() * 8 + index.ntotal * 8)


def _latencies(index: faiss.Index, queries: np.ndarray, k: int) -> list[float]:
    out = []
    k = min(k, index.ntotal)
    for query in queries:
        started = time.perf_counter()
        index.search(query.reshape(1, -1), k)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _timed(index: faiss.Index, queries: np.ndarray, k: int, threads: int) -> dict:
    """Latency of one query at a time with FAISS's OpenMP pool set to `threads` (restored after)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        _latencies(index, queries[:20], k)  # warm-up, not counted
        return latency_summary(_latencies(index, queries, k))
    finally:
        faiss.omp_set_num_threads(before)


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (len(truth) * k)


def run(base: np.ndarray, queries: np.ndarray, *, settings: dict, sizes=DEFAULT_SIZES, ef_sweep=DEFAULT_EF_SWEEP,
        latency_queries: int = 200, search_k: int = 50, recall_k: int = 10, noise: float = 0.6, seed: int = 0,
        progress: Progress | None = None) -> dict:
    progress = progress or Progress(False)
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if base.ndim != 2 or not len(base):
        raise ValueError("no base vectors")
    dim = base.shape[1]
    default_threads = faiss.omp_get_max_threads()
    sizes = sorted(set(int(s) for s in sizes))
    progress(f"vector_search: building {sizes[-1]:,} vectors from {len(base):,} real ones")
    collection = synthetic_collection(base, sizes[-1], noise=noise, seed=seed)
    exact, approx, params = _indexes(dim, settings)
    default_ef = params["efSearch"]
    timed = queries[:latency_queries]
    ids = np.arange(sizes[-1], dtype=np.int64)
    points = []
    added = 0
    build_exact = build_hnsw = 0.0
    rss_before = rss_mb()
    for size in sizes:
        chunk, chunk_ids = collection[added:size], ids[added:size]
        started = time.perf_counter()
        exact.add_with_ids(chunk, chunk_ids)
        build_exact += time.perf_counter() - started
        started = time.perf_counter()
        approx.add_with_ids(chunk, chunk_ids)
        build_hnsw += time.perf_counter() - started
        added = size
        progress(f"vector_search: {size:,} vectors (HNSW build so far {build_hnsw:.0f} s); searching")
        _, truth = exact.search(queries, recall_k)  # batched: the ground truth
        exact_lat = _timed(exact, timed, search_k, default_threads)
        exact_lat_1 = _timed(exact, timed, search_k, 1)
        sweep = []
        for ef in sorted(set(ef_sweep) | {default_ef}):
            _set_ef(approx, ef)
            _, found = approx.search(queries, recall_k)
            lat = _timed(approx, timed, search_k, 1)  # what efSearch itself costs, free of thread waits
            sweep.append({"ef_search": ef, "recall_at_10": round(_recall(found, truth, recall_k), 4),
                          "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"]})
        _set_ef(approx, default_ef)
        at_default = next(s for s in sweep if s["ef_search"] == default_ef)
        hnsw_lat = _timed(approx, timed, search_k, default_threads)
        points.append({
            "vectors": size,
            "real_vectors": min(size, len(base)),
            "store_uses": "hnsw" if size > settings["exact_search_max"] else "exact",
            "exact": {"p50_ms": exact_lat["p50_ms"], "p95_ms": exact_lat["p95_ms"],
                      "p50_ms_1_thread": exact_lat_1["p50_ms"], "p95_ms_1_thread": exact_lat_1["p95_ms"],
                      "build_s_cumulative": round(build_exact, 3), "index_mb": round(size * dim * 4 / MB, 1)},
            "hnsw": {"p50_ms": hnsw_lat["p50_ms"], "p95_ms": hnsw_lat["p95_ms"],
                     "p50_ms_1_thread": at_default["p50_ms"], "p95_ms_1_thread": at_default["p95_ms"],
                     "recall_at_10": at_default["recall_at_10"], "ef_search": default_ef,
                     "build_s_cumulative": round(build_hnsw, 2), "index_mb": round(_hnsw_bytes(approx) / MB, 1)},
            "ef_sweep": sweep,
        })
        progress(f"vector_search: {size:,}: exact p95 {exact_lat['p95_ms']:.2f} ms, HNSW p95 "
                 f"{at_default['p95_ms']:.2f} ms, recall@10 {at_default['recall_at_10']:.3f} at efSearch {default_ef}")
    rss_after = rss_mb()
    largest = points[-1]
    reaching = [s for s in largest["ef_sweep"] if s["recall_at_10"] >= 0.95]
    recommended = min(reaching, key=lambda s: s["ef_search"]) if reaching else None
    del exact, approx, collection
    gc.collect()
    return {
        "dim": dim,
        "base_real_vectors": len(base),
        "queries": len(queries),
        "latency_queries": len(timed),
        "search_k": search_k,
        "recall_k": recall_k,
        "noise": noise,
        "hnsw_params": params,
        "exact_search_max": settings["exact_search_max"],
        "faiss_threads": default_threads,
        "points": points,
        "largest": {"vectors": largest["vectors"], "exact_p95_ms": largest["exact"]["p95_ms"],
                    "hnsw_p95_ms": largest["hnsw"]["p95_ms"], "hnsw_recall_at_10": largest["hnsw"]["recall_at_10"],
                    "hnsw_build_s": largest["hnsw"]["build_s_cumulative"]},
        "smallest_ef_search_reaching_0_95_at_largest": recommended,
        "rss_growth_mb": round(rss_after - rss_before, 1),
    }
