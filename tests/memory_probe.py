"""Run by test_hostile_input.py: ingest sources through NewsService in a fresh process and report
how far the peak resident memory rose, as one JSON line (the ingest report plus `peak_growth_mb`).

    memory_probe.py DATA_DIR TIMEOUT_SECONDS SOURCE...

A process of its own, so that the peak resident size measures this one ingest: it is reset once the
imports and the service are loaded, and read from /proc (Linux) when the ingest is done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeEmbedder  # noqa: E402

from bench.common import peak_rss_mb, reset_peak_rss, rss_mb  # noqa: E402
from bot.config import Config  # noqa: E402
from bot.service import NewsService  # noqa: E402


if __name__ == "__main__":
    data_dir, timeout, *sources = sys.argv[1:]
    config = Config(base_dir=Path(data_dir))
    config.index.dir = data_dir
    config.fetch.timeout_seconds = float(timeout)
    config.fetch.fetch_linked_pages = False
    service = NewsService(config, embedder=FakeEmbedder())
    service.loader  # noqa: B018 - the readers' imports belong to the baseline, not to the ingest
    # Start the peak over from the current size, so that what the imports once took does not hide
    # what the ingest takes.
    if not reset_peak_rss():
        sys.exit("cannot reset the peak resident size (/proc/self/clear_refs)")
    before = rss_mb()
    report = service.ingest(sources).to_json()
    print(json.dumps({**report, "peak_growth_mb": round(peak_rss_mb() - before, 1)}))
