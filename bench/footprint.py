"""Resident memory and disk bytes per 100k chunks.

Memory is read in fresh processes (`python -m bench.footprint`), so that nothing an earlier section
allocated is counted: one probe opens the bench store, loads its FAISS index and answers a few
searches; another does the same on an empty store; the difference, scaled to 100k chunks, is what
the chunks cost. With the model, the same pair is run through a whole NewsService asking real
questions, which is also the resident size of a bot serving this corpus. Disk is the store folder
(SQLite with its WAL, the FAISS file), with SQLite's share by table where SQLite reports it.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
import sqlite3
import sys
import tempfile
from pathlib import Path

from bench.common import MB, Progress, dir_bytes, run_in_process
from index.embed import backend_of

PER = 100_000


# -- the probe (runs in its own process) -----------------------------------------------------------


def _probe(spec: dict) -> dict:
    from bench.common import peak_rss_mb, rss_mb

    if spec["kind"] == "service":
        from bench.common import bench_config, sample_questions
        from bot.service import NewsService

        with open(spec["config_pickle"], "rb") as handle:
            config = pickle.load(handle)
        before = rss_mb()
        service = NewsService(bench_config(config, spec["data_dir"]))
        loaded = rss_mb()
        questions = sample_questions(service.store, spec["queries"], seed=11) or [("What happened?", "")]
        for question, _ in questions:
            service.ask(question)
        store = service.store
    else:
        from index.store import SearchFilters, StoreSettings, open_store

        before = loaded = rss_mb()
        store = open_store(StoreSettings(), data_dir=spec["data_dir"], model_name=spec["model_name"], dim=spec["dim"],
                           exact_search_max=spec["exact_search_max"], hnsw_m=spec["hnsw_m"],
                           hnsw_ef_search=spec["hnsw_ef_search"])
        rng = random.Random(11)
        picked = rng.sample(store.article_ids(), min(store.counts().articles, spec["queries"]))
        everything = SearchFilters()
        # What a question costs the store: a vector search, BM25, the passages.
        for vector in store.lede_vectors(picked).values():
            store.chunks_with_articles([chunk_id for chunk_id, _ in store.dense_search(vector, 50, everything)])
        for article_id in picked:
            words = [w for w in store.article(article_id)[0].title.lower().split() if w.isalnum()][:6]
            store.lexical_search(words, 50, everything)
    counts = store.counts()
    return {"kind": spec["kind"], "chunks": counts.chunks, "articles": counts.articles, "rss_start_mb": round(before, 1),
            "rss_loaded_mb": round(loaded, 1), "rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def run_probe(spec: dict) -> dict:
    return run_in_process("bench.footprint", spec, what=f"memory probe ({spec['kind']})")


# -- the section -----------------------------------------------------------------------------------


def _sqlite_tables(path: Path) -> dict[str, int] | None:
    """Bytes per table (indexes and FTS shadow tables folded into their table), if SQLite has dbstat."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
            owners = dict(db.execute("SELECT name, tbl_name FROM sqlite_master").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        return None
    out: dict[str, int] = {}
    for name, size in rows:
        owner = owners.get(name, name)
        if owner.startswith("lexicon_"):
            owner = "lexicon (BM25)"
        elif owner.startswith("sqlite_"):
            owner = "sqlite internal"
        out[owner] = out.get(owner, 0) + int(size)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def disk(store_dir: Path, chunks: int) -> dict:
    files = dir_bytes(store_dir)
    sqlite_bytes = sum(v for k, v in files.items() if k.startswith("news.sqlite3"))
    faiss_bytes = sum(v for k, v in files.items() if k.endswith(".faiss"))
    total = sqlite_bytes + faiss_bytes
    out = {
        "chunks": chunks,
        "sqlite_bytes": sqlite_bytes,
        "faiss_bytes": faiss_bytes,
        "total_bytes": total,
        "total_mb": round(total / MB, 1),
        "files": {k: v for k, v in files.items() if k.startswith("news.sqlite3") or k.endswith(".faiss")},
    }
    if chunks:
        out["mb_per_100k_chunks"] = round(total / chunks * PER / MB, 1)
        out["sqlite_mb_per_100k_chunks"] = round(sqlite_bytes / chunks * PER / MB, 1)
        out["faiss_mb_per_100k_chunks"] = round(faiss_bytes / chunks * PER / MB, 1)
    tables = _sqlite_tables(store_dir / "news.sqlite3")
    if tables:
        out["sqlite_tables_mb"] = {k: round(v / MB, 1) for k, v in tables.items()}
    return out


def run(config, store_dir: Path, *, model_name: str, dim: int, with_model: bool = True, queries: int = 20,
        progress: Progress | None = None) -> dict:
    progress = progress or Progress(False)
    store_dir = Path(store_dir)
    idx = config.index
    common = {"model_name": model_name, "dim": dim, "exact_search_max": idx.exact_search_max,
              "hnsw_m": idx.hnsw_m, "hnsw_ef_search": idx.hnsw_ef_search, "queries": queries}
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-footprint-") as folder:
        empty_dir = Path(folder) / "empty"
        config_pickle = Path(folder) / "config.pickle"
        # The empty store and the full one with the same embedding backend: "auto" would give the empty
        # one a new index's backend, whose memory differs.
        pinned = copy.deepcopy(config)
        pinned.index.embed_backend = backend_of(model_name)
        config_pickle.write_bytes(pickle.dumps(pinned))
        kinds = ["store"] + (["service"] if with_model else [])
        for kind in kinds:
            progress(f"footprint: {kind} probes (empty store, then the bench store) in fresh processes")
            empty = run_probe({**common, "kind": kind, "data_dir": str(empty_dir), "config_pickle": str(config_pickle)})
            full = run_probe({**common, "kind": kind, "data_dir": str(store_dir), "config_pickle": str(config_pickle)})
            chunks = full["chunks"]
            delta = full["rss_mb"] - empty["rss_mb"]
            out[kind] = {
                "empty": empty, "full": full, "rss_delta_mb": round(delta, 1),
                "rss_mb_per_100k_chunks": round(delta / chunks * PER, 1) if chunks else None,
            }
    chunks = out["store"]["full"]["chunks"]
    headline = out.get("service", out["store"])
    out["chunks"] = chunks
    out["rss_mb_per_100k_chunks"] = headline["rss_mb_per_100k_chunks"]
    out["measured_with"] = "service" if "service" in out else "store"
    # What the vectors alone must take in RAM: float32, `dim` numbers each (flat index).
    out["vectors_mb_per_100k_chunks"] = round(PER * dim * 4 / MB, 1)
    out["disk"] = disk(store_dir, chunks)
    return out


if __name__ == "__main__":
    print(json.dumps(_probe(json.loads(sys.argv[1]))))
