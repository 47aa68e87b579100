"""What every section shares: machine facts, memory readings, percentiles, corpus slices, questions."""

from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from bot.config import Config
from index.article import Article
from index.sentences import split_sentences

MB = 1024 * 1024


# -- machine -------------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 0)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """The machine and software a figure was measured on; the load average shows how shared it was."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": _cpu_model(),
        "memory_total_mb": _memory_total_mb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "faiss": _version("faiss-cpu"),
        "numpy": _version("numpy"),
        "sentence_transformers": _version("sentence-transformers"),
        "git_commit": _git_commit(),
    }
    if "torch" in sys.modules:  # only when the model is loaded anyway: importing torch is slow
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# -- memory ----------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Resident memory now (VmRSS), in MiB; the peak so far where /proc is missing."""
    kb = _status_kb("VmRSS")
    if kb is None:
        return peak_rss_mb()
    return kb / 1024


def peak_rss_mb() -> float:
    """The highest resident memory since the process started or `reset_peak_rss` (VmHWM)."""
    kb = _status_kb("VmHWM")
    if kb is None:  # ru_maxrss is in KiB on Linux
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def reset_peak_rss() -> bool:
    """Start a new peak from the current resident memory (Linux 4.0+); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def dir_bytes(path: Path) -> dict[str, int]:
    """Bytes of each file in a folder (not recursive)."""
    return {p.name: p.stat().st_size for p in sorted(Path(path).iterdir()) if p.is_file()}


# -- figures ---------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_summary(values_ms: list[float]) -> dict:
    """p50/p95/p99/mean/max of latencies in ms, rounded for reading."""
    if not values_ms:
        return {"n": 0}
    return {
        "n": len(values_ms),
        "p50_ms": round(percentile(values_ms, 50), 3),
        "p95_ms": round(percentile(values_ms, 95), 3),
        "p99_ms": round(percentile(values_ms, 99), 3),
        "mean_ms": round(sum(values_ms) / len(values_ms), 3),
        "max_ms": round(max(values_ms), 3),
    }


class Progress:
    """Lines on standard error, so that stdout keeps exactly one JSON object."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.started
            print(f"[bench {elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------------


def shared_data_dir(config: Config) -> Path:
    """../shared/data beside the checkout (NEWSDESK_SHARED_DATA overrides it, as in the tests)."""
    if os.environ.get("NEWSDESK_SHARED_DATA"):
        return Path(os.environ["NEWSDESK_SHARED_DATA"])
    for base in (Path(config.base_dir), Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return Path(config.base_dir).parent / "shared" / "data"


def default_corpus(config: Config) -> list[Path]:
    data = shared_data_dir(config)
    return [data / "reuters" / "corpus.jsonl", data / "bbc" / "corpus.jsonl"]


def corpus_lines(path: Path, *, start: int = 0, count: int | None = None) -> list[bytes]:
    """Raw JSONL lines [start, start+count) of a corpus file."""
    with open(path, "rb") as handle:
        lines = (line for line in handle if line.strip())
        return list(itertools.islice(lines, start, None if count is None else start + count))


def read_articles(path: Path, *, start: int = 0, count: int | None = None) -> list[Article]:
    """Articles [start, start+count) of a JSONL corpus, read by the project's own reader."""
    import io

    from index.sources.jsonl import JsonlReader

    data = b"".join(corpus_lines(path, start=start, count=count))
    return [a for a in JsonlReader().run(io.BytesIO(data), source=str(path)) if isinstance(a, Article)]


def write_slice(path: Path, out: Path, *, start: int = 0, count: int | None = None) -> int:
    """Lines of a corpus copied to a temporary file (outside the repository), for a real file ingest."""
    lines = corpus_lines(path, start=start, count=count)
    out.write_bytes(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
    return len(lines)


def bench_config(config: Config, data_dir: Path | str) -> Config:
    """The config with its index in `data_dir` and no language model: the extractive engine answers."""
    clone = copy.deepcopy(config)
    clone.index.dir = str(data_dir)
    clone.llm.base_url = ""
    return clone


# -- questions -------------------------------------------------------------------------------------

_TRAILING = re.compile(r"[\s,;:.!?\"'”’)]+$")


def plain_title(title: str) -> str:
    """A headline on one line, in sentence case if it was all capitals (Reuters' are)."""
    title = " ".join(title.split())
    return title.capitalize() if title.isupper() else title


def _title_question(title: str) -> str:
    return f"What happened with {_TRAILING.sub('', plain_title(title))}?"


def _sentence_question(text: str, rng: random.Random) -> str:
    sentences = split_sentences(text) or [text]
    words = sentences[0].split()
    words = words[: rng.randint(6, 14)]
    return _TRAILING.sub("", " ".join(words)) + "?"


def sample_questions(store, n: int, *, seed: int = 5, skip: int = 0) -> list[tuple[str, str]]:
    """(question, source article id) for n articles of the store drawn with a fixed seed.

    Every other question is the article's headline ("What happened with …?"), the others the
    first 6-14 words of its first sentence: short and long queries, as people type them. `skip`
    draws past the first `skip` articles, for questions disjoint from an earlier sample.
    """
    # Only the picked articles' texts are read: the memory probes ask questions too, and every
    # text of the corpus held at once would count as the index's own resident memory.
    article_ids = store.article_ids()
    rng = random.Random(seed)
    order = list(range(len(article_ids)))
    rng.shuffle(order)
    out = []
    for i, article_id in enumerate(article_ids[j] for j in order[skip : skip + n]):
        meta, text = store.article(article_id)
        question = _title_question(meta.title) if i % 2 == 0 and meta.title.strip() else _sentence_question(text, rng)
        out.append((question, article_id))
    return out


def run_in_process(module: str, spec: dict, *, what: str, timeout: float = 1800,
                   env: dict[str, str | None] | None = None) -> dict:
    """`python -m module SPEC` in a fresh process (memory and load times of its own); its last line of
    standard output, a JSON object. `env` sets variables for it (None: unset)."""
    environ = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    environ["PYTHONPATH"] = root + (os.pathsep + environ["PYTHONPATH"] if environ.get("PYTHONPATH") else "")
    environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    result = subprocess.run([sys.executable, "-m", module, json.dumps(spec)], capture_output=True, text=True,
                            env=environ, timeout=timeout)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{what} failed: {tail[0]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
