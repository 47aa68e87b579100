"""`newsdesk bench` on tiny inputs with the fake embedder: every section runs, and its JSON has the
figures the report reads, positive and consistent with each other. No timing is asserted. scale_out
and embed_backends start processes that load the real model, so each runs in a test of its own, with
the real model."""

from __future__ import annotations

import json
import random
import sys

import pytest
from fakes import FakeEmbedder

from bench import SECTIONS, report
from bench.runner import Bench, require_matplotlib

WORDS = ("harbour council river flood energy market election court strike bank coal wheat rail school "
         "hospital storm budget tariff oil mine port shares profit vote minister police fire bridge farm "
         "export import trade union price rates growth drought crop film music match league player coach").split()


def _corpus(path, n: int, *, seed: int, outlet: str) -> None:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
                     for _ in range(rng.randint(4, 9))]
        text = " ".join(sentences[:3]) + "\n\n" + " ".join(sentences[3:])
        lines.append(json.dumps({"id": f"{outlet}-{i}", "title": " ".join(rng.choice(WORDS) for _ in range(5)).title(),
                                 "text": text, "source": outlet, "published": f"2020-01-{1 + i % 28:02d}T12:00:00"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


PARAMS = {
    "ingest_throughput": {"articles": 12, "rounds": 2},
    "ask_latency": {"questions": 12, "warmup": 2, "scoped_questions": 5, "all_cores_questions": 4,
                    "filtered_questions": 2},
    "footprint": {"with_model": False, "queries": 5},
    "vector_search": {"sizes": (60, 300), "latency_queries": 10, "ef_sweep": (8, 64), "queries": 20},
    "discord_load": {"seed_articles": 15, "feed_articles": 6, "questions": 6, "lead_seconds": 0.0, "timeout": 60},
    "threads": {"workload": "numpy", "queries": 3, "texts": 4, "busy_seconds": 30},
    "backends": {"sizes": (150, 300), "questions": 4, "warmup": 1, "scoped_questions": 2, "recall_queries": 5,
                 "memory_queries": 0, "tune_server": False},
}
# These two start processes that load the real model: each runs in a test of its own, below, as does
# follow_matching (whose follows need more headlines than the corpus here has at its defaults).
IN_PROCESS = [name for name in SECTIONS if name not in ("scale_out", "embed_backends", "follow_matching")]


@pytest.fixture
def corpus(tmp_path):
    a, b = tmp_path / "wire.jsonl", tmp_path / "bbc.jsonl"
    _corpus(a, 30, seed=1, outlet="Wire")
    _corpus(b, 40, seed=2, outlet="BBC")
    return [a, b]


def _plot_available() -> bool:
    try:
        require_matplotlib()
        return True
    except RuntimeError:
        return False


def test_every_section_writes_its_figures(config, corpus, tmp_path):
    results = tmp_path / "bench" / "results"
    plot = _plot_available()
    bench = Bench(config, data_dir=tmp_path / "benchdata", results_dir=results, corpus=corpus,
                  embedder=FakeEmbedder(), params=PARAMS, progress=False, plot=plot)
    summary = bench.run(IN_PROCESS)
    assert summary["failed"] == {} and summary["ran"] == IN_PROCESS
    for name in IN_PROCESS:
        record = json.loads((results / f"{name}.json").read_text())
        assert record["section"] == name and record["date"] and record["machine"]["cpu_count"] >= 1
        assert record["machine"]["python"] and record["machine"]["faiss"]
    assert json.loads((results / "summary.json").read_text())["sections"].keys() == set(IN_PROCESS)
    s = summary["sections"]

    ingest = s["ingest_throughput"]
    assert ingest["chunks"] > 0 and ingest["texts_encoded"] == ingest["chunks"]
    assert ingest["ingest_chunks_per_s"] > 0 and ingest["bare_model_chunks_per_s"] > 0
    assert ingest["ratio"] == pytest.approx(ingest["ingest_chunks_per_s"] / ingest["bare_model_chunks_per_s"], rel=0.01)
    assert len(ingest["ratio_per_round"]) == 2 and 0 < ingest["encode_share_of_ingest"] <= 1

    ask = s["ask_latency"]
    assert ask["questions"] == 12 and ask["mode"] == "extractive" and ask["chunks"] > 0
    assert 0 < ask["ask"]["p50_ms"] <= ask["ask"]["p95_ms"] <= ask["ask"]["max_ms"]
    assert ask["retrieval_only"]["p50_ms"] <= ask["ask"]["p50_ms"]
    assert 0 <= ask["source_article_cited_share"] <= 1 and ask["corpus_first_ingest"]["ingested_now"]
    assert ask["scoped_like_discord"]["questions"] == 5 and ask["faiss_all_cores"]["questions"] == 4

    foot = s["footprint"]
    assert foot["chunks"] == ask["chunks"] and foot["measured_with"] == "store"
    assert foot["store"]["full"]["rss_mb"] > 0 and foot["store"]["empty"]["chunks"] == 0
    assert foot["disk"]["total_bytes"] == foot["disk"]["sqlite_bytes"] + foot["disk"]["faiss_bytes"] > 0
    assert foot["disk"]["mb_per_100k_chunks"] > 0

    vectors = s["vector_search"]
    assert [p["vectors"] for p in vectors["points"]] == [60, 300]
    assert vectors["hnsw_params"]["efSearch"] == config.index.hnsw_ef_search
    for point in vectors["points"]:
        assert point["exact"]["p50_ms"] > 0 and point["hnsw"]["p50_ms"] > 0
        assert point["exact"]["p50_ms_1_thread"] > 0 and point["hnsw"]["p50_ms_1_thread"] > 0
        assert 0 <= point["hnsw"]["recall_at_10"] <= 1
        assert {e["ef_search"] for e in point["ef_sweep"]} == {8, 64, config.index.hnsw_ef_search}
        assert point["hnsw"]["index_mb"] >= point["exact"]["index_mb"]
    assert vectors["largest"]["vectors"] == 300

    load = s["discord_load"]
    assert load["all_answered"] and load["answered"] == load["questions"] == 6
    assert load["first_response"]["n"] == 6 and load["answer"]["n"] == 6
    assert load["first_response"]["p50_ms"] <= load["answer"]["p50_ms"]
    assert load["feed_url_fetched"] and load["feed_ingest"]["added"] == 6 and load["feed_ingest"]["error"] is None
    assert load["event_loop"]["max_stall_ms"] is not None and load["memory"]["peak_rss_mb"] > 0
    assert load["event_loop"]["idle_process_same_tick"]["max_lateness_ms"] >= 0
    assert load["error_log_records"] == 0 and load["unknown_routes"] == []

    threads = s["threads"]
    assert [(r["setting"], r["condition"]) for r in threads["rows"]] == [
        (setting, condition) for condition in ("quiet", "one busy process")
        for setting in ("default", "OMP_WAIT_POLICY=PASSIVE", "1 thread")]
    assert all(r["query"]["n"] == 3 and r["passages_per_s"] > 0 for r in threads["rows"])

    scale = s["backends"]
    assert [(p["backend"], p["size"]) for p in scale["points"]] == [
        (backend, size) for size in (150, 300) for backend in ("sqlite", "postgres")]
    for point in scale["points"]:
        assert point["chunks"] >= point["size"] and point["articles"] > 0 and point["build_seconds"] >= 0
        assert point["ask"]["n"] == 4 and point["scoped_like_discord"]["questions"] == 2
        assert 0 < point["ask"]["p50_ms"] <= point["ask"]["p95_ms"] and point["parts_p50_ms"]["embed_ms"] >= 0
        assert 0.5 <= point["recall_at_10"] <= 1 and point["queries"] == 5
        if point["backend"] == "sqlite":  # BM25 as it searches against reading every posting
            assert point["lexical"]["everything"]["questions"] == 4
            assert point["lexical"]["scoped_like_discord"]["questions"] == 2
            assert all(m["recall_at_10"] == 1 for m in point["lexical"].values())  # the top 10 is exact
    assert scale["postgres"]["pgvector"] and scale["synthetic"]["noise"] == 0.6
    # The same copies in both backends: the same chunk counts.
    assert len({(p["size"], p["chunks"]) for p in scale["points"]}) == 2

    assert [t["met"] is not None for t in summary["targets"]] == [True] * 9
    # A point measured again in a later run (one backend, after a change) is shown with its own date.
    assert "| chunks | measured |" not in report.markdown(summary, results)
    scale["points"][0]["date"] = "2030-01-02T00:00:00+00:00"
    dated = report.markdown(summary, results)
    assert "| chunks | measured |" in dated and " | 2030-01-02 | " in dated and "2030-01-02" in dated.splitlines()[2]
    if plot:
        assert (results / "latency_vs_size.png").stat().st_size > 0
        written = (results.parent / "REPORT.md").read_text()
        assert "results/latency_vs_size.png" in written and "## Targets" in written

    # A second run reuses the index (the corpus is not ingested again) and keeps the other sections.
    again = Bench(config, data_dir=tmp_path / "benchdata", results_dir=results, corpus=corpus,
                  embedder=FakeEmbedder(), params=PARAMS, progress=False, plot=False).run(["ask_latency"])
    assert again["ran"] == ["ask_latency"] and again["sections"].keys() == set(IN_PROCESS)
    assert again["sections"]["ask_latency"]["corpus_first_ingest"]["ingested_now"] is False
    # A change to how the index is cut builds it again (re-ingesting would only find it all indexed).
    config.index.chunk_tokens = 60
    rebuilt = Bench(config, data_dir=tmp_path / "benchdata", results_dir=results, corpus=corpus,
                    embedder=FakeEmbedder(), params=PARAMS, progress=False, plot=False).run(["ask_latency"])
    first = rebuilt["sections"]["ask_latency"]["corpus_first_ingest"]
    assert first["ingested_now"] and first["articles_added"] == 70 and first["embedded"] == first["chunks"]


def test_follow_matching_times_the_matcher_and_the_ingest_with_and_without_follows(config, corpus, tmp_path):
    params = {"articles": 12, "follow_counts": (3, 30), "rounds": 2}
    results = tmp_path / "bench" / "results"
    plot = _plot_available()
    summary = Bench(config, data_dir=tmp_path / "benchdata", results_dir=results, corpus=corpus,
                    embedder=FakeEmbedder(), params={"follow_matching": params}, progress=False,
                    plot=plot).run(["follow_matching"])
    assert summary["failed"] == {} and summary["ran"] == ["follow_matching"]
    r = summary["sections"]["follow_matching"]
    assert r["articles_read"] == 12 and 0 < r["articles"] <= 12 and r["chunks"] >= r["articles"]
    assert sum(r["ingest_batches"]) == r["articles"] and r["threshold"] == 0.54
    topics = r["topics"]
    assert topics["count"] == 30 and topics["with_phrase"] > 0 and topics["with_exclusion"] > 0
    assert len(set(topics["examples"])) == len(topics["examples"]) > 0

    # Three and thirty follows at normal, then the thirty all at broad.
    assert [(p["follows"], p["level"]) for p in r["points"]] == [(3, "normal"), (30, "normal"), (30, "broad")]
    for point in r["points"]:
        single = point["single"]
        assert single["n"] == r["articles"] and 0 < single["p50_ms"] <= single["max_ms"]
        assert point["batch_ms_per_article"] > 0 and point["registry_read_ms"] > 0
        assert 0 <= point["articles_matched"] <= min(point["matches"], r["articles"])
        assert point["follows_matched"] <= point["follows"] and point["single_share_of_ingest"] > 0
    # More follows see the same articles: every match of the first three is a match among thirty.
    assert r["points"][0]["matches"] <= r["points"][1]["matches"]

    ingest = r["ingest"]
    none, most = ingest["without_follows"], ingest["with_follows"]
    assert (none["follows"], most["follows"]) == (0, 30) and len(none["seconds"]) == len(most["seconds"]) == 2
    for side in (none, most):
        assert side["ms_per_article"] > 0 and side["chunks_per_s"] > 0
        assert side["articles_per_s"] == pytest.approx(1000 / side["ms_per_article"], rel=0.01)
        assert 0 <= side["match_share"] <= side["follows_share"] < 1
    assert none["matches"] == 0 and most["matches"] == r["points"][1]["matches"]  # the same articles, follows
    assert most["match_ms_per_article"] > 0 and r["follows_share_of_ingest"] == most["follows_share"]
    assert ingest["difference_ms_per_article"] == pytest.approx(most["ms_per_article"] - none["ms_per_article"],
                                                                abs=0.002)

    [target] = [t for t in summary["targets"] if t["name"].startswith("follow matching")]
    assert target["name"] == "follow matching at 30 normal follows, with queueing: share of ingest time"
    assert target["value"] == r["follows_share_of_ingest"] and target["met"] is (target["value"] < 0.10)
    if plot:
        assert "## Topic follows at ingest" in (results.parent / "REPORT.md").read_text()


@pytest.mark.slow
def test_scale_out_runs_real_workers_and_bot_processes(config, corpus, tmp_path):
    """Workers and bot processes as an operator runs them (the real model, an embedded PostgreSQL): every
    article stored once by one worker and by two, every question answered, each guild's questions
    handled by the process holding its shard only."""
    params = {"feeds": 3, "articles_per_feed": 4, "ask_articles": 10, "questions": 6, "timeout": 300}
    bench = Bench(config, data_dir=tmp_path / "benchdata", results_dir=tmp_path / "results", corpus=corpus,
                  params={"scale_out": params}, progress=False, plot=False)
    summary = bench.run(["scale_out"])
    assert summary["failed"] == {} and summary["ran"] == ["scale_out"]
    result = summary["sections"]["scale_out"]

    ingest = result["ingest"]
    runs = ingest["runs"]
    assert [run["workers"] for run in runs] == [1, 2] and ingest["items_in_feeds"] == 12
    for run in runs:
        # The corpus has no duplicates: every item is one stored article, each feed polled once.
        assert run["articles"] == 12 and run["chunks"] >= 12 and run["fetches_per_feed"] == [1, 1, 1]
        assert not run["start_gate_timed_out"] and 0 < run["seconds"] < run["seconds_from_process_start"]
        assert run["chunks_per_s"] == pytest.approx(run["chunks"] / run["seconds"], rel=0.01)
        assert len(run["load_average_before"]) == len(run["load_average_after"]) == 3
    assert ingest["same_articles_every_run"] and runs[0]["chunks"] == runs[1]["chunks"]
    assert ingest["ratio_2_workers_to_1"] == pytest.approx(runs[1]["chunks_per_s"] / runs[0]["chunks_per_s"], rel=0.01)

    ask = result["ask"]
    assert ask["index"]["articles"] == 10 and ask["questions"] == 6
    two, one = ask["layouts"]
    assert {name: p["shards"] for name, p in two["processes"].items()} == {"serve-0": [0], "serve-1": [1]}
    assert {name: p["shards"] for name, p in one["processes"].items()} == {"serve-0-1": [0, 1]}
    for layout in (two, one):
        assert layout["all_answered"] and layout["answered"] == layout["questions"] == 6
        assert layout["first_response"]["n"] == layout["answer"]["n"] == 6
        assert layout["first_response"]["p50_ms"] <= layout["answer"]["p50_ms"]
        assert layout["each_guild_answered_by_its_shards_process"]
        received = sum(sum(p["interactions_received"].values()) for p in layout["processes"].values())
        assert received == layout["questions"] + layout["warm_up_questions"]  # each reached one process, once
        for process in layout["processes"].values():
            assert process["received_its_shards_guilds_only"]
            assert process["event_loop"]["ticks"] > 0 and process["event_loop"]["max_stall_during_questions_ms"] >= 0
        assert layout["idle_process_same_tick"]["max_lateness_ms"] >= 0
    # Alternating guilds: each of the two processes got its guild's three questions (and its warm-up).
    assert all(sum(p["interactions_received"].values()) >= 4 for p in two["processes"].values())
    assert result["postgres"]["pgvector"] and result["model"].startswith("all-MiniLM-L6-v2")


@pytest.mark.slow
def test_embed_backends_measures_each_backend_on_the_same_texts(config, corpus, tmp_path):
    params = {"backends": ("torch", "onnx-int8"), "articles": 10, "rounds": 1, "busy_articles": 10, "questions": 5,
              "quality_articles": 10, "quality_questions": 8}
    results = tmp_path / "bench" / "results"
    bench = Bench(config, data_dir=tmp_path / "benchdata", results_dir=results, corpus=corpus,
                  params={"embed_backends": params}, progress=False, plot=_plot_available())
    summary = bench.run(["embed_backends"])
    assert summary["failed"] == {}, summary["failed"]
    rows = summary["sections"]["embed_backends"]["backends"]
    assert list(rows) == ["torch", "onnx-int8"]
    assert [rows[b]["model"] for b in rows] == ["all-MiniLM-L6-v2", "all-MiniLM-L6-v2+onnx-int8"]
    assert rows["torch"]["chunks"] == rows["onnx-int8"]["chunks"] > 0  # the same texts for each
    assert rows["torch"]["cosine_to_torch"]["min"] == pytest.approx(1.0, abs=1e-4)
    assert 0.95 <= rows["onnx-int8"]["cosine_to_torch"]["min"] <= rows["onnx-int8"]["cosine_to_torch"]["mean"] <= 1
    for figures in rows.values():
        # Questions kept coming while the background ingest ran (it reads, chunks and embeds 20 articles).
        assert figures["question_embed_quiet"]["n"] >= 5 and figures["question_embed_during_ingest"]["n"] >= 5
        assert figures["ingest_chunks_per_s"] > 0 and figures["bare_chunks_per_s"] > 0 and figures["load_seconds"] > 0
        assert figures["rss_loaded_mb"] > figures["rss_before_mb"] > 0
        assert figures["quality"]["questions"] == 8 and 0 <= figures["quality"]["cites_own_article"] <= 1
        assert figures["ingest_over_fastest_bare"] == pytest.approx(
            figures["ingest_chunks_per_s"] / max(f["bare_chunks_per_s"] for f in rows.values()), rel=0.01)
    assert rows["torch"]["ingest_over_torch_ingest"] == 1.0
    if bench.plot:
        assert "## Embedding backends" in (results.parent / "REPORT.md").read_text()


def test_a_missing_matplotlib_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[bench\]'"):
        require_matplotlib()


def test_an_unknown_section_is_refused(config, tmp_path):
    bench = Bench(config, data_dir=tmp_path / "b", results_dir=tmp_path / "r", corpus=[], embedder=FakeEmbedder(),
                  progress=False, plot=False)
    with pytest.raises(ValueError, match="unknown bench section"):
        bench.run(["nope"])
