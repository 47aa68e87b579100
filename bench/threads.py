"""The model's OpenMP threads on a shared two-core machine: one query's embedding, with and without
another process busy on a core.

torch runs the model with an OpenMP pool as large as the machine (two threads here). When another
process holds one core, every parallel region waits for the descheduled thread, and libgomp's
waiting threads spin while they wait. Each probe is a fresh process (the pool is fixed when torch
loads) that embeds `queries` one-sentence questions one at a time and then `texts` passages in
batches, as an ingest does: with the defaults, with OMP_WAIT_POLICY=PASSIVE (waiting threads
sleep), and with one thread; each on a quiet machine and beside a busy-looping process the bench
starts itself (bounded in time, stopped after the probe).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.common import Progress, latency_summary, run_in_process

SETTINGS = (("default", {}), ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}),
            ("1 thread", {"OMP_NUM_THREADS": "1"}))
PASSAGE = ("The central bank kept its main interest rate unchanged on Thursday, saying that inflation had eased "
           "but that the labour market remained tight and wage growth strong. ") * 4


def _probe(spec: dict) -> dict:
    if spec["workload"] == "model":
        from index.embed import load_embedder

        embedder = load_embedder(spec["model"], batch_size=spec["batch_size"])
        encode = embedder.encode
    else:  # a small stand-in for tests: numpy's BLAS on a fixed matrix
        import numpy as np

        matrix = np.random.default_rng(0).standard_normal((384, 384)).astype(np.float32)

        def encode(texts):
            return np.stack([matrix @ np.full(384, len(t), dtype=np.float32) for t in texts])

    encode(["warm up"] * 8)
    times = []
    for n in range(spec["queries"]):
        started = time.perf_counter()
        encode([f"What did the minister say about question {n}?"])
        times.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    encode([PASSAGE + str(n) for n in range(spec["texts"])])
    seconds = time.perf_counter() - started
    return {"query": latency_summary(times), "passages_per_s": round(spec["texts"] / seconds, 2)}


def run(config, *, workload: str = "model", queries: int = 30, texts: int = 128, busy_seconds: float = 600.0,
        progress: Progress | None = None) -> dict:
    progress = progress or Progress(False)
    spec = {"workload": workload, "model": config.index.model, "batch_size": config.index.batch_size,
            "queries": queries, "texts": texts}
    rows = []
    for condition in ("quiet", "one busy process"):
        for name, env in SETTINGS:
            progress(f"threads: {name}, {condition}")
            hog = None
            if condition != "quiet":  # a local busy loop on one core, ended after the probe (and by itself)
                hog = subprocess.Popen([sys.executable, "-c",
                                        f"import time\nend = time.monotonic() + {busy_seconds}\n"
                                        "while time.monotonic() < end: pass"])
            try:
                # Only the setting's OpenMP variables: none inherited from the shell that runs the bench.
                figures = run_in_process("bench.threads", spec, what="thread probe", timeout=900,
                                         env={"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None, **env})
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            rows.append({"setting": name, "condition": condition, **figures})
    return {"workload": workload, "queries": queries, "texts": texts, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(_probe(json.loads(sys.argv[1]))))
