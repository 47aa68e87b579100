"""Run by test_hostile_input.py: ingest sources through NewsService in a fresh process and report
how far the peak resident memory rose, as one JSON line (the ingest report plus `peak_growth_mb`).

    memory_probe.py DATA_DIR TIMEOUT_SECONDS SOURCE...

A process of its own, so that the peak resident size measures this one ingest: it is reset once the
imports and the service are loaded, and read from /proc (Linux) when the ingest is done.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeEmbedder  # noqa: E402

from bot.config import Config  # noqa: E402
from bot.service import NewsService  # noqa: E402


def reset_peak() -> None:
    """Start the peak over from the current size (Linux: "5" to clear_refs resets VmHWM), so that
    what the imports once took does not hide what the ingest takes."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def current_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


if __name__ == "__main__":
    data_dir, timeout, *sources = sys.argv[1:]
    config = Config(base_dir=Path(data_dir))
    config.index.dir = data_dir
    config.fetch.timeout_seconds = float(timeout)
    config.fetch.fetch_linked_pages = False
    service = NewsService(config, embedder=FakeEmbedder())
    service.loader  # noqa: B018 - the readers' imports belong to the baseline, not to the ingest
    reset_peak()
    before = current_mb()
    report = service.ingest(sources).to_json()
    print(json.dumps({**report, "peak_growth_mb": round(peak_mb() - before, 1)}))
