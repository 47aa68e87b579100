"""bench/REPORT.md and its plot, written from the results JSON (every figure comes from there)."""

from __future__ import annotations

from pathlib import Path

PLOT = "latency_vs_size.png"


def report_path(results_dir: Path) -> Path:
    return Path(results_dir).parent / "REPORT.md"


# -- the plot --------------------------------------------------------------------------------------


def plot(summary: dict, out: Path) -> bool:
    """Latency against collection size: exact and HNSW vector search, and the whole `ask`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = summary["sections"]
    vectors = sections.get("vector_search")
    ask = sections.get("ask_latency")
    if not vectors and not ask:
        return False
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    if vectors:
        points = vectors["points"]
        sizes = [p["vectors"] for p in points]
        ef = vectors["hnsw_params"]["efSearch"]
        threads = vectors.get("faiss_threads")
        series = (("exact", "p95_ms", "o-", "tab:blue", f"exact (flat IP) p95, {threads} FAISS threads (as the store runs)"),
                  ("exact", "p95_ms_1_thread", "o--", "tab:cyan", "exact p95, 1 FAISS thread"),
                  ("hnsw", "p95_ms", "s-", "tab:orange",
                   f"HNSW (M={vectors['hnsw_params']['M']}, efSearch={ef}) p95, {threads} threads"),
                  ("hnsw", "p95_ms_1_thread", "s--", "tab:brown", "HNSW p95, 1 FAISS thread"),
                  ("hnsw", "p50_ms_1_thread", "s:", "tab:brown", "HNSW p50, 1 FAISS thread"))
        for kind, key, style, color, label in series:
            if all(key in p[kind] for p in points):
                ax.plot(sizes, [p[kind][key] for p in points], style, color=color, label=label)
        switch = vectors.get("exact_search_max")
        if switch and sizes[0] < switch < sizes[-1]:
            ax.axvline(switch, color="grey", lw=0.8, ls=":")
            ax.annotate("store switches to HNSW", (switch, 0.45), xycoords=("data", "axes fraction"),
                        fontsize=8, color="grey", ha="right", va="center", rotation=90)
    if ask:
        chunks = ask["chunks"]
        ax.plot([chunks], [ask["ask"]["p95_ms"]], "*", ms=14, color="tab:red",
                label=f"whole ask p95 ({chunks:,} chunks, extractive)")
        ax.plot([chunks], [ask["retrieval_only"]["p95_ms"]], "^", ms=9, color="tab:green",
                label="ask retrieval p95 (embed + FAISS + BM25 + fusion)")
        ax.axhline(150, color="tab:red", lw=0.8, ls=":")
        ax.annotate("ask p95 target 150 ms", (0.01, 150), xycoords=("axes fraction", "data"), fontsize=8,
                    color="tab:red", va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vectors (chunks) in the collection")
    ax.set_ylabel("latency per query, ms")
    ax.set_title("Search latency against collection size (one query at a time, k=50)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return True


# -- the markdown ----------------------------------------------------------------------------------


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _met(met) -> str:
    return {True: "met", False: "**missed**", None: "not run"}[met]


def _machine(summary: dict) -> str:
    m = summary["machine"]
    memory = f"{m['memory_total_mb'] / 1024:.0f} GiB" if m.get("memory_total_mb") else "?"
    return (f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('cpus_usable')} cores usable (shared with other "
            f"work: load average {', '.join(str(x) for x in m.get('load_average', []))} when the summary was "
            f"written), {memory} RAM; Python {m.get('python')}, torch {m.get('torch')} (CPU), faiss-cpu "
            f"{m.get('faiss')}, sentence-transformers {m.get('sentence_transformers')}")


def markdown(summary: dict, results_dir: Path) -> str:
    s = summary["sections"]
    lines = ["# newsdesk performance", ""]
    dates = sorted({each["date"][:10] for v in s.values() for each in (v, *v.get("points", ())) if "date" in each})
    lines += [
        f"Measured by `make bench` (`newsdesk --config config.toml bench`) on {', '.join(dates) or '–'}, on "
        f"{_machine(summary)}. Every figure below comes from `results/*.json` (one file per section, each "
        "with its machine and date; `summary.json` has them all). Ratios and side-by-side figures come from "
        "one run, so the shared machine's noise hits both sides alike; absolute figures move with the other "
        "work on the machine (each JSON records the load average).",
        "",
        "## Targets",
        "",
        "| figure | target | measured | |",
        "|---|---|---|---|",
    ]
    for t in summary["targets"]:
        value = t["value"]
        unit = " ms" if "ms" in t["target"] and value is not None else ""
        lines.append(f"| {t['name']} | {t['target']} | {_fmt(value, 3 if isinstance(value, float) and value < 2 else 1)}"
                     f"{unit} | {_met(t['met'])} |")
    lines.append("")

    if "ingest_throughput" in s:
        r = s["ingest_throughput"]
        lines += [
            "## Ingest against the bare model",
            "",
            f"The first {r['articles_read']} articles of `{r['corpus']}` ingested end to end (read, de-duplicated, "
            f"chunked, embedded with a cold cache, written to SQLite and FAISS) into a fresh store: "
            f"{r['chunks']:,} chunks. The bare model then encodes exactly the texts the ingest embedded, in the "
            f"same {r['encode_calls']} call(s), batch size {r['batch_size']}. {r['rounds']} rounds, alternating "
            "which goes first; each side's best round (noise on a shared machine only adds time).",
            "",
            "| | chunks/s |",
            "|---|---|",
            f"| ingest, end to end | {_fmt(r['ingest_chunks_per_s'])} |",
            f"| bare `model.encode`, same texts | {_fmt(r['bare_model_chunks_per_s'])} |",
            f"| **ratio** | **{r['ratio']:.3f}** |",
            "",
            f"Medians: {_fmt(r.get('ingest_chunks_per_s_median'))} against {_fmt(r.get('bare_model_chunks_per_s_median'))} "
            f"chunks/s (ratio {_fmt(r.get('ratio_of_medians'), 3)}); ratio per round (ingest and bare model side by side): "
            f"{', '.join(f'{x:.3f}' for x in r['ratio_per_round'])}.",
            "",
            f"The model's calls take {r['encode_share_of_ingest'] * 100:.0f}% of the ingest; everything else costs "
            f"{r['overhead_seconds_per_1k_chunks']:.2f} s per 1,000 chunks.",
            "",
        ]
    if "follow_matching" in s:
        lines += _follow_matching(s["follow_matching"])
    if "embed_backends" in s:
        lines += _embed_backends(s["embed_backends"])
    if "ask_latency" in s:
        r = s["ask_latency"]
        a, ret = r["ask"], r["retrieval_only"]
        parts = r.get("parts_median_ms", {})
        first = r.get("corpus_first_ingest") or {}
        lines += [
            "## `ask` latency",
            "",
            f"{r['questions']} questions drawn with a fixed seed from the {r['articles']:,} articles "
            f"({r['chunks']:,} chunks, {r['vector_index']} vector search) of {' + '.join(r['corpus'])}, asked one at "
            "a time through `NewsService.ask` in extractive mode, after "
            f"{r['warmup_questions']} warm-up questions. Half are headlines (\"What happened with …?\"), half the "
            f"first 6–14 words of an article. The answer cites the article the question came from for "
            f"{r['source_article_cited_share'] * 100:.0f}% of them.",
            "",
            "| | p50 | p95 | p99 | max |",
            "|---|---|---|---|---|",
            f"| whole `ask` | {_fmt(a['p50_ms'])} ms | **{_fmt(a['p95_ms'])} ms** | {_fmt(a['p99_ms'])} ms | "
            f"{_fmt(a['max_ms'])} ms |",
            f"| retrieval alone | {_fmt(ret['p50_ms'])} ms | {_fmt(ret['p95_ms'])} ms | {_fmt(ret['p99_ms'])} ms | "
            f"{_fmt(ret['max_ms'])} ms |",
        ]
        scoped = r.get("scoped_like_discord")
        if scoped:
            sa = scoped["ask"]
            lines.append(f"| whole `ask` filtered to a server's collections, as Discord asks ({scoped['questions']} "
                         f"other questions) | {_fmt(sa['p50_ms'])} ms | {_fmt(sa['p95_ms'])} ms | "
                         f"{_fmt(sa['p99_ms'])} ms | {_fmt(sa['max_ms'])} ms |")
        every = r.get("faiss_all_cores")
        if every:
            sa = every["ask"]
            lines.append(f"| whole `ask` with FAISS at {every['search_threads']} threads, its default "
                         f"({every['questions']} other questions) | "
                         f"{_fmt(sa['p50_ms'])} ms | {_fmt(sa['p95_ms'])} ms | {_fmt(sa['p99_ms'])} ms | "
                         f"{_fmt(sa['max_ms'])} ms |")
        filtered = r.get("filtered_by_allowed_chunks") or []
        for f in filtered:
            fa = f["ask"]
            lines.append(f"| whole `ask` with a date filter letting {f['allowed_chunks']:,} chunks through "
                         f"({f['questions']} other questions) | {_fmt(fa['p50_ms'])} ms | {_fmt(fa['p95_ms'])} ms | "
                         f"{_fmt(fa['p99_ms'])} ms | {_fmt(fa['max_ms'])} ms |")
        lines += [
            "",
            "Median of each part: " + ", ".join(f"{k.removesuffix('_ms')} {v:.1f} ms" for k, v in parts.items()) + ".",
        ]
        if first:
            rate = f" ({first['chunks_per_s']} chunks/s)" if first.get("chunks_per_s") else ""
            lines += [
                "",
                f"The bench index is kept between runs (`<data dir>/bench`); building it the first time took "
                f"{_fmt(first.get('seconds'))} s{rate}: {first.get('articles_added', 0):,} articles, "
                f"{first.get('duplicates', 0):,} duplicates folded, {first.get('chunks', 0):,} chunks, "
                f"{first.get('embedded', 0):,} embedded.",
            ]
        lines.append("")
    if "vector_search" in s:
        r = s["vector_search"]
        hp = r["hnsw_params"]
        lines += [
            "## Vector search alone, 10k to 1M vectors",
            "",
            f"The first {r['base_real_vectors']:,} vectors are the bench index's real chunk embeddings; the rest are "
            f"Gaussian-perturbed copies of random real ones (noise norm {r['noise']}, cosine to the original ≈ 0.86), "
            f"renormalised, {r['dim']}-d float32. Queries: {r['queries']} held-out question embeddings (latency over "
            f"{r['latency_queries']}, one at a time, k={r['search_k']} as the retriever asks, {r['faiss_threads']} "
            f"FAISS threads). HNSW is the store's own: M={hp['M']}, efConstruction={hp['efConstruction']}, "
            f"efSearch={hp['efSearch']}; the store uses it past {r['exact_search_max']:,} chunks. Recall@10 is "
            "HNSW's top 10 against exact search's.",
            "",
            f"| vectors | store uses | exact p50 / p95, {r['faiss_threads']} threads | exact, 1 thread | "
            f"HNSW p50 / p95, {r['faiss_threads']} threads | HNSW, 1 thread | HNSW recall@10 | HNSW build (cumulative) | "
            "exact / HNSW index |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def pair(d: dict, suffix: str = "") -> str:
            if f"p50_ms{suffix}" not in d:
                return "–"
            return f"{d['p50_ms' + suffix]:.2f} / {d['p95_ms' + suffix]:.2f} ms"

        for p in r["points"]:
            e, h = p["exact"], p["hnsw"]
            lines.append(
                f"| {p['vectors']:,} | {p['store_uses']} | {pair(e)} | {pair(e, '_1_thread')} | {pair(h)} | "
                f"{pair(h, '_1_thread')} | {h['recall_at_10']:.3f} | {h['build_s_cumulative']:.0f} s | "
                f"{e['index_mb']:,.0f} / {h['index_mb']:,.0f} MB |"
            )
        largest = r["points"][-1]
        lines += [
            "",
            f"efSearch at {largest['vectors']:,} vectors (latency with one FAISS thread: the search's own cost):",
            "",
            "| efSearch | recall@10 | p50 | p95 |",
            "|---|---|---|---|",
        ]
        for e in largest["ef_sweep"]:
            mark = " (store default)" if e["ef_search"] == hp["efSearch"] else ""
            lines.append(f"| {e['ef_search']}{mark} | {e['recall_at_10']:.3f} | {e['p50_ms']:.2f} ms | "
                         f"{e['p95_ms']:.2f} ms |")
        best = r.get("smallest_ef_search_reaching_0_95_at_largest")
        lines.append("")
        if best is None:
            lines.append("No efSearch in the sweep reaches recall@10 0.95 at this size.")
        elif best["ef_search"] == hp["efSearch"]:
            lines.append(f"The default efSearch {hp['efSearch']} is the smallest in the sweep that reaches 0.95 here "
                         f"({best['recall_at_10']:.3f}, p95 {best['p95_ms']:.2f} ms).")
        elif best["ef_search"] < hp["efSearch"]:
            lines.append(f"The default efSearch {hp['efSearch']} reaches the target; efSearch {best['ef_search']} is "
                         f"the smallest in the sweep that does ({best['recall_at_10']:.3f}, p95 {best['p95_ms']:.2f} ms).")
        else:
            lines.append(f"The default efSearch {hp['efSearch']} misses the target here; efSearch {best['ef_search']} "
                         f"is the smallest in the sweep that reaches it ({best['recall_at_10']:.3f}, p95 "
                         f"{best['p95_ms']:.2f} ms).")
        lines.append("")
    if "footprint" in s:
        r = s["footprint"]
        d = r["disk"]
        lines += [
            "## Memory and disk",
            "",
            f"Resident memory, each figure read in a fresh process after loading the index and answering "
            f"questions, bench index ({r['chunks']:,} chunks) against an empty one:",
            "",
            "| | empty index | bench index | per 100k chunks |",
            "|---|---|---|---|",
        ]
        for kind, label in (("service", "whole NewsService (model loaded, questions asked)"),
                            ("store", "store alone (FAISS loaded, searches run)")):
            if kind in r:
                k = r[kind]
                lines.append(f"| {label} | {_fmt(k['empty']['rss_mb'])} MB | {_fmt(k['full']['rss_mb'])} MB | "
                             f"**{_fmt(k['rss_mb_per_100k_chunks'])} MB** |")
        lines += [
            "",
            f"The vectors alone are {r['vectors_mb_per_100k_chunks']} MB per 100k chunks (float32, flat index); past "
            "the HNSW switch the graph adds its links (see the index sizes above).",
            "",
            f"On disk the bench index takes {_fmt(d['total_mb'])} MB: SQLite {_fmt(d['sqlite_bytes'] / 2**20)} MB "
            f"(articles, chunks, BM25 postings and the vector cache), FAISS {_fmt(d['faiss_bytes'] / 2**20)} MB; "
            f"**{_fmt(d.get('mb_per_100k_chunks'))} MB per 100k chunks** (SQLite "
            f"{_fmt(d.get('sqlite_mb_per_100k_chunks'))}, FAISS {_fmt(d.get('faiss_mb_per_100k_chunks'))}).",
        ]
        if d.get("sqlite_tables_mb"):
            lines.append("SQLite by table: " + ", ".join(f"{k} {v:,.1f} MB" for k, v in d["sqlite_tables_mb"].items())
                         + ".")
        lines.append("")
    if "discord_load" in s:
        r = s["discord_load"]
        loop, fr, an = r["event_loop"], r["first_response"], r["answer"]
        ingest = r["feed_ingest"]
        lines += [
            "## Load through Discord",
            "",
            f"The real bot on the local Discord emulator, its index seeded with {r['seed']['articles']} articles of `{r['corpus']}` "
            f"({r['seed']['chunks']:,} chunks). A local RSS feed of the next {ingest['articles_in_feed']} articles is "
            f"listed in the config, so the bot's poller ingests it ({ingest['chunks']:,} chunks in "
            f"{_fmt(ingest['seconds'])} s, in a worker thread); {r['questions']} `/ask` interactions from different members arrive at "
            f"once (rate limits off: this measures capacity) while it runs (the ingest ran through {r['ingest_overlap_share'] * 100:.0f}% of the questions' "
            f"{_fmt(r['questions_window_s'])} s).",
            "",
            "| | |",
            "|---|---|",
            f"| questions answered | {r['answered']}/{r['questions']} ({r['answers_with_citation']} with a citation) |",
            f"| first response (the defer), p50 / p95 | {_fmt(fr.get('p50_ms'))} / {_fmt(fr.get('p95_ms'))} ms |",
            f"| answer, p50 / p95 | {_fmt(an.get('p50_ms'))} / {_fmt(an.get('p95_ms'))} ms |",
            f"| longest event-loop stall (5 ms tick) | {_fmt(loop['max_stall_ms'])} ms "
            f"({_fmt(loop['max_stall_during_questions_ms'])} ms while the questions were in flight; an idle "
            f"process ticking beside it: {_fmt(loop.get('idle_process_same_tick', {}).get('max_lateness_ms'))} ms) |",
            f"| peak resident memory | {_fmt(r['memory']['peak_rss_mb'])} MB (at start {_fmt(r['memory']['rss_start_mb'])} MB: "
            "the bench's process, with what the sections before this one left in it) |",
            f"| errors logged | {r['error_log_records']} |",
            "",
        ]
    if "threads" in s:
        r = s["threads"]
        lines += [
            "## The model's threads on a shared machine",
            "",
            f"One question embedded at a time ({r['queries']} of them), then {r['texts']} passages in batches, each "
            "setting in a fresh process; 'one busy process' is a busy loop the bench runs beside it on one core.",
            "",
            "| setting | machine | one query p50 / p95 | passages/s |",
            "|---|---|---|---|",
        ]
        for row in r["rows"]:
            q = row["query"]
            lines.append(f"| {row['setting']} | {row['condition']} | {_fmt(q['p50_ms'])} / {_fmt(q['p95_ms'])} ms | "
                         f"{_fmt(row['passages_per_s'])} |")
        lines.append("")
    if "abstention" in s:
        lines += _abstention(s["abstention"])
    if "scale_out" in s:
        lines += _scale_out(s["scale_out"])
    if "backends" in s:
        lines += _backends(s["backends"])
    findings = _findings(s)
    if findings:
        lines += ["## What the figures say", ""] + [f"- {f}" for f in findings] + [""]
    if (results_dir / PLOT).exists():
        lines += ["## Latency against collection size", "", f"![latency against collection size](results/{PLOT})", ""]
    lines += [
        "## Reproduce",
        "",
        "```sh",
        "make bench                                   # every section; results in bench/results/, this report",
        "newsdesk bench --only ask_latency --json     # one section (repeatable); one JSON object on stdout",
        "newsdesk bench --quick                       # smaller inputs, for a quick look",
        "```",
        "",
        "The first run ingests `../shared/data/reuters` and `../shared/data/bbc` into `<data dir>/bench` "
        "(about twenty minutes on two cores: the model embeds every chunk); later runs reuse that index.",
        "",
    ]
    return "\n".join(lines)


def _load(before: list[float], after: list[float]) -> str:
    return f"{before[0]:.1f} → {after[0]:.1f}"


def _abstention(r: dict) -> list[str]:
    lines = [
        "## Questions the news does not answer",
        "",
        f"{r['questions_present']} questions drawn from the bench index (as in `ask` latency) and "
        f"{r['questions_absent']} written off its corpus (`bench/data/off_corpus_questions.txt`: later events, "
        "general knowledge, everyday questions), each answered once with the abstention step left out and its "
        "confidence kept. `answered_absent`: off-corpus questions that got an answer (lower is better); "
        "`found_present`: corpus questions answered; `recall_present`: answered and citing the question's own article.",
        "",
        "| abstain_below | answered_absent | found_present | recall_present |",
        "|---|---|---|---|",
    ]
    for point in r["curve"]:
        mark = "**" if abs(point["abstain_below"] - r["abstain_below"]) < 1e-9 else ""
        lines.append(f"| {mark}{point['abstain_below']:.2f}{mark} | {point['answered_absent']:.3f} | "
                     f"{point['found_present']:.3f} | {point['recall_present']:.3f} |")
    answered = r.get("answered_off_corpus") or []
    lines += ["", f"At the configured {r['abstain_below']} (in bold): answered_absent {r['answered_absent']:.3f}, "
              f"found_present {r['found_present']:.3f}, recall_present {r['recall_present']:.3f}. "
              + (f"Off-corpus questions still answered: {'; '.join(answered)}." if answered else
                 "No off-corpus question was answered."), ""]
    return lines


def _scale_out(r: dict) -> list[str]:
    ingest, ask = r["ingest"], r["ask"]
    cores = r.get("machine", {}).get("cpus_usable")
    lines = [
        "## Scaling out: workers and shards",
        "",
        f"`newsdesk worker` processes (real processes, the real model) poll {ingest['feeds']} local RSS feeds "
        f"({ingest['items_in_feeds']} articles of `{r['corpus']}`, the full text in the items, a slice of its own "
        "in each feed) into one PostgreSQL; each run on a fresh schema and fresh data folders, so every run "
        f"embeds from scratch. Timed {ingest['timed']}. Load average: the 1-minute figure before → after each run.",
        "",
        "| workers | seconds | from process start | articles | chunks | articles/s | chunks/s | load average |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in ingest["runs"]:
        lines.append(f"| {run['workers']} | {_fmt(run['seconds'])} | {_fmt(run.get('seconds_from_process_start'))} | "
                     f"{run['articles']:,} | {run['chunks']:,} | {_fmt(run['articles_per_s'])} | "
                     f"**{_fmt(run['chunks_per_s'])}** | "
                     f"{_load(run['load_average_before'], run['load_average_after'])} |")
    fetched_once = all(n == 1 for run in ingest["runs"] for n in run["fetches_per_feed"])
    ratio = ingest.get("ratio_2_workers_to_1")
    lines += [
        "",
        (f"Two workers against one: **{ratio:.2f}×** the chunks/s" if ratio is not None else "Two workers against "
         "one: –") + f", on {cores or '?'} usable cores (each worker's torch uses all of them). Every run stored "
        f"{'the same' if ingest['same_articles_every_run'] else '**different**'} articles and chunks; each feed was "
        f"fetched {'once' if fetched_once else '**more than once**'} per run.",
        "",
        f"Questions: {ask['questions']} `/ask`s at once, alternating between a guild on shard 0 and one on shard 1, "
        f"over {ask['index']['articles']} articles ({ask['index']['chunks']:,} chunks) in the same PostgreSQL, after "
        "one warm-up question per guild; rate limits off. Bot processes run `newsdesk serve` (through "
        "`bench/serve_probe.py`, which adds a 5 ms tick to the event loop), each layout on a fresh Discord emulator. "
        "The stall is the longest tick lateness while the questions were in flight (over the bot's whole life, "
        "connecting and the warm-ups included, in brackets).",
        "",
        "| layout | answered | first response p50 / p95 | answer p50 / p95 | longest event-loop stall | "
        "idle process, same tick | load average |",
        "|---|---|---|---|---|---|---|",
    ]
    for layout in ask["layouts"]:
        fr, an = layout["first_response"], layout["answer"]
        stalls = "; ".join(f"{name}: {_fmt(p['event_loop']['max_stall_during_questions_ms'])} "
                           f"({_fmt(p['event_loop'].get('max_stall_ms'))}) ms" for name, p in layout["processes"].items())
        idle = layout.get("idle_process_same_tick", {}).get("max_lateness_ms")
        lines.append(
            f"| {layout['layout']} | {layout['answered']}/{layout['questions']} | {_fmt(fr.get('p50_ms'))} / "
            f"{_fmt(fr.get('p95_ms'))} ms | {_fmt(an.get('p50_ms'))} / **{_fmt(an.get('p95_ms'))} ms** | {stalls} | "
            f"{_fmt(idle)} ms | {_load(layout['load_average_before'], layout['load_average_after'])} |")
    routed = all(layout["each_guild_answered_by_its_shards_process"] for layout in ask["layouts"])
    lines += [
        "",
        "Each guild's interactions reached " + ("only the process holding its shard." if routed else
                                                "**a process not holding its shard**."),
        "",
    ]
    return lines


def _backends(r: dict) -> list[str]:
    synthetic, pg = r["synthetic"], r.get("postgres") or {}
    server = ""
    if pg:
        tuned = ", ".join(f"{k} {pg[k]}" for k in ("shared_buffers", "effective_cache_size", "work_mem") if k in pg)
        server = (f" PostgreSQL {pg['server_version']} with pgvector {pg['pgvector']}"
                  f"{' (the bench’s own embedded server)' if pg.get('embedded') else ''}, {tuned}.")
    # Points re-measured on their own (one backend after a change) carry their run's date.
    dated = any("date" in p for p in r["points"])
    lines = [
        "## SQLite + FAISS and PostgreSQL + pgvector side by side",
        "",
        f"Synthetic collections built from {synthetic['from']}: {synthetic['copies']} (Gaussian noise of norm "
        f"{synthetic['noise']}, renormalised), through the storage interface, nothing embedded. Both backends hold "
        f"the same copies. {r['questions']} questions through `NewsService.ask` (extractive, the query embedding "
        f"included), one at a time; recall@10 of each backend's vector search against exact search over the same "
        f"vectors.{server}",
        "",
        f"| backend | chunks |{' measured |' if dated else ''} vector index | ask p50 | ask p95 | as Discord asks, p95 "
        "| embed / dense / BM25 p50 | recall@10 | serving process RSS | on disk |",
        f"|---|---|{'---|' if dated else ''}---|---|---|---|---|---|---|---|",
    ]
    for p in r["points"]:
        parts = p["parts_p50_ms"]
        memory = p.get("serving_process")
        measured = f" {p.get('date', r['date'])[:10]} |" if dated else ""
        lines.append(
            f"| {p['backend']} | {p['chunks']:,} |{measured} {p['vector_index']} | {_fmt(p['ask']['p50_ms'])} ms | "
            f"**{_fmt(p['ask']['p95_ms'])} ms** | {_fmt(p['scoped_like_discord']['ask']['p95_ms'])} ms | "
            f"{_fmt(parts.get('embed_ms'))} / {_fmt(parts.get('dense_ms'))} / {_fmt(parts.get('bm25_ms'))} ms | "
            f"{_fmt(p['recall_at_10'], 3)} | {_fmt(memory['rss_mb']) + ' MB' if memory else '–'} | "
            f"{_fmt(p['disk_mb'] / 1024, 2)} GB |")
    builds = ", ".join(f"{p['backend']} {p['chunks']:,} in {_fmt(p['build_seconds'] / 60)} min" for p in r["points"])
    lines += ["", f"Built once and kept: {builds}.", ""]
    lexical = [p for p in r["points"] if "lexical" in p]
    if lexical:
        lines += [
            "SQLite's BM25 reads each word's postings best first and stops when nothing unread could enter its "
            "top 10 (or at a bound); against the same search reading every posting (recall@10 counts the full "
            "top 10's scores found: a chunk's copies score alike):",
            "",
            "| chunks | questions | BM25 recall@10 | BM25 p50 / p95 | reading every posting p50 / p95 |",
            "|---|---|---|---|---|",
        ]
        for p in lexical:
            for scope, m in p["lexical"].items():
                lines.append(
                    f"| {p['chunks']:,} | {scope.replace('_', ' ')} ({m['questions']}) | {_fmt(m['recall_at_10'], 3)} | "
                    f"{_fmt(m['bm25']['p50_ms'])} / **{_fmt(m['bm25']['p95_ms'])} ms** | "
                    f"{_fmt(m['bm25_reading_every_posting']['p50_ms'])} / "
                    f"{_fmt(m['bm25_reading_every_posting']['p95_ms'])} ms |")
        lines.append("")
    return lines


def _follow_matching(r: dict) -> list[str]:
    topics, ingest = r["topics"], r["ingest"]
    none, most = ingest["without_follows"], ingest["with_follows"]
    lines = [
        "## Topic follows at ingest",
        "",
        f"The first {r['articles_read']} articles of `{r['corpus']}` ({r['articles']} new, {r['chunks']:,} chunks) "
        "matched "
        f"against the follows of one server, threshold {r['threshold']}: {topics['count']:,} distinct topics made from "
        f"headlines further on in the corpus ({topics['mean_words']} words on average; {topics['with_phrase']} with a "
        f"\"quoted phrase\", {topics['with_exclusion']} with a -word), encoded by `{r['model']}`, in a SQLite store "
        "(the matcher reads it at most every 10 s; the registry read is shown on its own). One article per call "
        "is a poll that brings one story (broad: the same topics followed at the broad level, weighed against the "
        "news sections too); the batch is "
        f"how ingest calls the matcher (batches of {', '.join(str(b) for b in r['ingest_batches'])} articles). "
        "Share: of the ingest time per article without follows.",
        "",
        "| follows | one article per call p50 / mean | share | in ingest's batch, per article | share | registry read "
        "| matches (articles) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in r["points"]:
        lines.append(
            f"| {p['follows']:,}{' broad' if p.get('level') == 'broad' else ''} | "
            f"{_fmt(p['single']['p50_ms'], 2)} / {_fmt(p['single']['mean_ms'], 2)} ms | "
            f"{p['single_share_of_ingest'] * 100:.2f}% | {_fmt(p['batch_ms_per_article'], 3)} ms | "
            f"{p['batch_share_of_ingest'] * 100:.2f}% | {_fmt(p['registry_read_ms'], 2)} ms | "
            f"{p['matches']:,} ({p['articles_matched']}) |")
    lines += [
        "",
        f"The same slice ingested end to end into fresh stores with no follows and with {most['follows']:,}, "
        f"{r['rounds']} rounds alternating which goes first (best round of each):",
        "",
        "| follows | ms per article | articles/s | chunks/s | matching, in the ingest | queueing its matches "
        "| matches |",
        "|---|---|---|---|---|---|---|",
    ]
    for side in (none, most):
        lines.append(
            f"| {side['follows']:,} | {_fmt(side['ms_per_article'])} | {_fmt(side['articles_per_s'], 2)} | "
            f"{_fmt(side['chunks_per_s'])} | {_fmt(side['match_ms_per_article'], 3)} ms/article "
            f"({side['match_share'] * 100:.2f}%) | {_fmt(side['queue_ms_per_article'], 3)} ms/article | "
            f"{side['matches']:,} |")
    lines += [
        "",
        f"With {most['follows']:,} follows, matching and queueing its matches take "
        f"{r['follows_share_of_ingest'] * 100:.2f}% of the ingest's time; the two ingests differ by "
        f"{ingest['difference_ms_per_article']:+.1f} ms per article ({ingest['difference_share'] * 100:+.1f}%), "
        "which includes the machine's noise.",
        "",
    ]
    return lines


def _embed_backends(r: dict) -> list[str]:
    rows = r["backends"]
    first = next(iter(rows.values()))
    quality = first["quality"]
    lines = [
        "## Embedding backends",
        "",
        f"`[index] embed_backend`, each backend in a fresh process on the same texts: the first articles of "
        f"`{r['slice']}` ingested ({first['chunks']:,} chunks; best of the rounds, against the backend's bare encode "
        f"of the same texts), one question embedded at a time ({first['question_embed_quiet']['n']} headlines of "
        f"`{r['questions_from']}`) on a quiet machine and while the process ingests, and {quality['questions']} "
        "questions asked over a slice of each corpus indexed with the backend. Cosine to torch's vectors on "
        f"{first['cosine_to_torch']['texts']} texts.",
        "",
        "| backend | ingest chunks/s | bare model chunks/s | × torch ingest | ingest / fastest bare | question p50 / p95 "
        "| during an ingest p50 / p95 | load | RSS loaded | cosine to torch min / mean | cites own article |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for backend, f in rows.items():
        quiet, busy, cos = f["question_embed_quiet"], f["question_embed_during_ingest"], f["cosine_to_torch"]
        lines.append(
            f"| {backend} | {_fmt(f['ingest_chunks_per_s'])} | {_fmt(f['bare_chunks_per_s'])} | "
            f"{f['ingest_over_torch_ingest']:.2f} | "
            f"{f['ingest_over_fastest_bare']:.2f} | {_fmt(quiet['p50_ms'])} / {_fmt(quiet['p95_ms'])} ms | "
            f"{_fmt(busy['p50_ms'])} / {_fmt(busy['p95_ms'])} ms | {_fmt(f['load_seconds'])} s | "
            f"{_fmt(f['rss_loaded_mb'])} MB | {cos['min']:.5f} / {cos['mean']:.5f} | "
            f"{f['quality']['cites_own_article']:.3f} |")
    return lines + [""]


def _findings(s: dict) -> list[str]:
    """Observations that follow from the figures; each only when its figures are there."""
    out = []
    ingest = s.get("ingest_throughput")
    if ingest:
        out.append(
            f"Ingest is model-bound: the model's calls take {ingest['encode_share_of_ingest'] * 100:.0f}% of it. The "
            f"rest ({ingest['overhead_seconds_per_1k_chunks']:.2f} s per 1,000 chunks: reading, de-duplicating, chunking, "
            "tokenizing, writing) runs before the model, not beside it: on two cores the model's threads use both.")
    vectors, ask = s.get("vector_search"), s.get("ask_latency")
    if ask and ask.get("faiss_all_cores"):
        every = ask["faiss_all_cores"]
        out.append(
            f"FAISS's OpenMP pool does not help a one-query search on this machine: inside `ask`, the vector "
            f"search's median is {ask['parts_median_ms'].get('dense_ms', 0):.1f} ms at {ask['search_threads']} "
            f"thread (`[retrieval] search_threads`) and {every['parts_median_ms'].get('dense_ms', 0):.1f} ms at "
            f"{every['search_threads']} (whole `ask` p50 {ask['ask']['p50_ms']:.1f} against "
            f"{every['ask']['p50_ms']:.1f} ms). The parallel region waits for a second core that the model's threads "
            "or other processes hold, most likely.")
    if vectors:
        largest = vectors["points"][-1]
        e = largest["exact"]
        if "p95_ms_1_thread" in e:
            out.append(f"Exact search at {largest['vectors']:,} vectors: p95 {e['p95_ms']:.0f} ms with "
                       f"{vectors['faiss_threads']} threads, {e['p95_ms_1_thread']:.0f} ms with one; HNSW "
                       f"{largest['hnsw']['p95_ms']:.2f} ms.")
        spikes = [p for p in vectors["points"] if "p50_ms_1_thread" in p["hnsw"]
                  and p["hnsw"]["p50_ms"] > 3 * p["hnsw"]["p50_ms_1_thread"]]
        if spikes:
            worst = max(spikes, key=lambda p: p["hnsw"]["p50_ms"] / p["hnsw"]["p50_ms_1_thread"])
            out.append(f"Even HNSW, whose search of one query is serial, waits on the pool (IDMap2's id translation "
                       f"opens a parallel region): at {worst['vectors']:,} vectors its p50 was "
                       f"{worst['hnsw']['p50_ms']:.2f} ms with {vectors['faiss_threads']} threads against "
                       f"{worst['hnsw']['p50_ms_1_thread']:.2f} ms with one, measured minutes apart while other work "
                       "loaded the machine. The retriever therefore searches with one FAISS thread.")
        hp = vectors["hnsw_params"]
        real = [p for p in vectors["points"] if p["real_vectors"] == p["vectors"]]
        best = vectors.get("smallest_ef_search_reaching_0_95_at_largest")
        text = (f"HNSW recall@10 at the default efSearch {hp['efSearch']}: "
                + ", ".join(f"{p['hnsw']['recall_at_10']:.3f} at {p['vectors']:,}" for p in vectors["points"]) + ".")
        if real:
            sizes = ", ".join(f"{p['vectors']:,}" for p in real)
            text += (f" The {sizes} points are real embeddings only; past them the"
                     " collection is perturbed copies, which crowd each neighbourhood with near-equals, so part of the "
                     "fall at 1M may be the synthetic data's and not the size's.")
        if best and best["ef_search"] > hp["efSearch"]:
            text += (f" efSearch {best['ef_search']} reaches {best['recall_at_10']:.3f} at {largest['vectors']:,} "
                     f"for p95 {best['p95_ms']:.2f} ms.")
        out.append(text)
    if ask and ask.get("scoped_like_discord"):
        scoped = ask["scoped_like_discord"]
        parts = scoped["parts_median_ms"]
        steps = {k: parts.get(k, 0) for k in ("embed_ms", "dense_ms", "bm25_ms", "fuse_ms")}
        plain = ask["parts_median_ms"]
        dearer = max(steps, key=lambda k: steps[k] - plain.get(k, 0))
        out.append(
            f"Questions from Discord carry a collection filter: p50 {scoped['ask']['p50_ms']:.0f} ms against "
            f"{ask['ask']['p50_ms']:.0f} ms. The allowed chunks of a server's filter are listed once and kept until "
            f"the index changes; what the filter still costs is mostly in {dearer.removesuffix('_ms')} "
            f"({steps[dearer]:.1f} against {plain.get(dearer, 0):.1f} ms median), whose candidates are checked against "
            "the filter.")
    threads = s.get("threads")
    if threads:
        rows = {(r["setting"], r["condition"]): r for r in threads["rows"]}
        busy_default = rows.get(("default", "one busy process"))
        busy_passive = rows.get(("OMP_WAIT_POLICY=PASSIVE", "one busy process"))
        quiet_default = rows.get(("default", "quiet"))
        quiet_passive = rows.get(("OMP_WAIT_POLICY=PASSIVE", "quiet"))
        if busy_default and busy_passive and quiet_default and quiet_passive:
            out.append(
                f"With another process busy on one core, embedding one question takes p50/p95 "
                f"{busy_default['query']['p50_ms']:.0f}/{busy_default['query']['p95_ms']:.0f} ms with torch's default "
                f"OpenMP settings and {busy_passive['query']['p50_ms']:.0f}/{busy_passive['query']['p95_ms']:.0f} ms "
                f"with OMP_WAIT_POLICY=PASSIVE (quiet machine: p50 {quiet_default['query']['p50_ms']:.0f} and "
                f"{quiet_passive['query']['p50_ms']:.0f} ms; passages/s {quiet_default['passages_per_s']:.1f} and "
                f"{quiet_passive['passages_per_s']:.1f}). The bot shares its machine with its own ingest and whatever "
                "else runs there.")
    filtered = (ask or {}).get("filtered_by_allowed_chunks") or []
    if len(filtered) >= 2:
        slow = max(filtered, key=lambda f: f["ask"]["p50_ms"])
        base = ask["ask"]["p50_ms"]
        span = ", ".join(f"{f['ask']['p50_ms']:.0f} ms at {f['allowed_chunks']:,}" for f in filtered)
        if slow["ask"]["p50_ms"] > 2 * base:
            out.append(f"Filters can cost a lot: `ask` p50 with a date filter is {span} allowed chunks, against "
                       f"{base:.0f} ms unfiltered; the worst ({slow['allowed_chunks']:,}) spends "
                       f"{slow['parts_median_ms'].get('dense_ms', 0):.0f} ms in the vector search. Up to the "
                       "SQLite backend's LISTED_FILTER_LIMIT (200,000) the allowed chunks are searched exactly, and every "
                       "Discord question carries a collection filter.")
        else:
            out.append(f"Filters cost little: `ask` p50 with a date filter is {span} allowed chunks, against "
                       f"{base:.0f} ms unfiltered.")
    return out


def write(summary: dict, results_dir: Path) -> Path:
    results_dir = Path(results_dir)
    plot(summary, results_dir / PLOT)
    path = report_path(results_dir)
    path.write_text(markdown(summary, results_dir), encoding="utf-8")
    return path
