"""`newsdesk`: the command line. Results go to standard output; progress and logs to standard error.

Every command that takes `--json` prints exactly one JSON object. Errors are one line, never a
stack trace (run with `-v` for the details).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from importlib import resources

from bot.config import Config, ConfigError, load_config
from index.retrieve import RetrievalMode
from index.store import SearchFilters
from index.timefilter import SINCE_CHOICES, parse_duration, parse_since

log = logging.getLogger("newsdesk")

DEFAULT_CONFIG_NAMES = ("config.toml",)


def sample_news_dir() -> str:
    """The bundled demo news, installed with the package."""
    return str(resources.files("index") / "sample")


def _filters(args: argparse.Namespace) -> SearchFilters:
    return SearchFilters(
        since=parse_since(args.since) if getattr(args, "since", None) else None,
        until=parse_since(args.until) if getattr(args, "until", None) else None,
        outlets=tuple(getattr(args, "outlet", None) or ()),
    )


def _emit(args: argparse.Namespace, data: dict, text: str) -> None:
    if args.json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(text + "\n")


def _service(config: Config):
    from bot.service import NewsService  # loads torch: keep `newsdesk --help` fast

    return NewsService(config)


def cmd_ingest(args, config):
    report = _service(config).ingest(args.sources, collection=args.collection, progress=not args.quiet)
    lines = [report.summary()]
    lines += [f"  failed: {f.source}: {f.reason}" for f in report.failed]  # sources come redacted
    _emit(args, report.to_json(), "\n".join(lines))
    return 0 if report.added or report.duplicates or not report.failed else 1


def cmd_ask(args, config):
    from bot.console import format_answer

    service = _service(config)
    stream = None
    if service.llm is not None and not args.json and sys.stdout.isatty():
        stream = _terminal_stream()
    answer = service.ask(" ".join(args.question), filters=_filters(args), mode=args.mode, on_text=stream)
    if stream:
        sys.stdout.write("\n\n")
    _emit(args, answer.to_json(), format_answer(answer))
    return 0


def _terminal_stream():
    """Shows the model's text as it arrives; the checked answer is printed after it.

    Each call carries the whole text so far. When the client retries (or asks again with fewer
    sources), the text starts over, so the new attempt gets a line of its own instead of being
    spliced onto the old one.
    """
    shown = [""]

    def on_text(text: str) -> None:
        if text.startswith(shown[0]):
            sys.stdout.write(text[len(shown[0]):])
        else:
            sys.stdout.write(f"\n[retrying]\n{text}")
        sys.stdout.flush()
        shown[0] = text

    return on_text


def cmd_summary(args, config):
    from bot.console import format_answer

    service = _service(config)
    if args.article:
        answer = service.summarize_article(args.article)
    elif args.topic:
        answer = service.summarize_topic(args.topic, filters=_filters(args))
    else:
        answer = service.digest(filters=_filters(args))
    _emit(args, answer.to_json(), format_answer(answer))
    return 0


def cmd_search(args, config):
    from bot.console import format_results

    results = _service(config).search(" ".join(args.query), filters=_filters(args), k=args.k)
    _emit(args, {"results": [r.to_json() for r in results]}, format_results(results))
    return 0


def cmd_stats(args, config):
    stats = _service(config).stats()
    _emit(args, stats, "\n".join(f"{k}: {v}" for k, v in stats.items()))
    return 0


def cmd_expire(args, config):
    service = _service(config)
    if args.article:
        removed = service.remove(args.article)
        if not removed:
            raise KeyError(f"no article with id {args.article!r}")
    else:
        removed = service.expire(parse_duration(args.older_than))
    _emit(args, {"removed": len(removed), "ids": removed}, f"removed {len(removed)} article(s)")
    return 0


def cmd_eval(args, config):
    from bot.evaluate import QAEvaluation, SummaryEvaluation

    if args.what == "qa":
        evaluation = QAEvaluation(config, limit=args.limit, backends=args.backend or (), abstention=args.abstention)
        result = evaluation.run(args.data, progress=not args.quiet)
        if args.abstention:
            _emit(args, result, abstention_lines(result))
            return 0
        keys = ("n", "hit_at_1", "hit_at_5", "hit_at_10", "answer_recall", "citation_precision", "answer_words",
                "answered", "purity", "p50_ms", "p95_ms")
        lines = ["backend  mode    " + " ".join(f"{k:>18}" for k in keys)]
        for backend, figures in result.get("backends", {result["backend"]: result}).items():
            rows = [("hybrid", figures), ("dense", figures["baselines"]["dense"]), ("bm25", figures["baselines"]["bm25"])]
            lines += [f"{backend:<9}{name:<8}" + " ".join(f"{r[k]:>18}" for k in keys) for name, r in rows]
    elif args.what == "follow":
        from bot.follow_eval import FollowEvaluation, follow_lines

        if not args.topics:
            raise ValueError("eval follow needs --topics FILE (e.g. bench/data/follow_topics_reuters.jsonl)")
        result = FollowEvaluation(config, limit=args.limit).run(args.data, args.topics, progress=not args.quiet)
        lines = [follow_lines(result)]
    else:
        if args.abstention:
            raise ValueError("--abstention is for eval qa")
        result = SummaryEvaluation(config, limit=args.limit).run(args.data, progress=not args.quiet)
        lines = [f"{'':<10}{'ROUGE-1':>9}{'ROUGE-2':>9}{'ROUGE-L':>9}  (n={result['n']}, F1 %)"]
        lines += [f"{name:<10}" + "".join(f"{r[k]:>9}" for k in ("rouge1", "rouge2", "rougeL"))
                  for name, r in (("newsdesk", result), ("lead-3", result["lead3"]))]
    _emit(args, result, "\n".join(lines))
    return 0


def abstention_lines(result: dict) -> str:
    """The abstention split as a table: the figures at the configured threshold, then the curve."""
    lines = [f"{result['indexed_articles']} of {result['articles']} stories indexed; "
             f"{result['questions_present']} questions about them, {result['questions_absent']} about the others",
             f"at abstain_below {result['abstain_below']}: answered_absent {result['answered_absent']}, "
             f"found_present {result['found_present']}, recall_present {result['recall_present']}, "
             f"purity {result['purity']}",
             "", f"{'abstain_below':>14}{'answered_absent':>17}{'found_present':>15}{'recall_present':>16}"
             f"{'cross-validated':>17}"]
    for point, cross in zip(result["curve"], result["refitted"]["cross_validated_curve"]):
        lines.append(f"{point['abstain_below']:>14.2f}{point['answered_absent']:>17}{point['found_present']:>15}"
                     f"{point['recall_present']:>16}   {cross['answered_absent']} / {cross['found_present']}")
    refit = result["refitted"]
    lines.append(f"refitted weights: {refit['weights']}, bias {refit['bias']}")
    return "\n".join(lines)


def cmd_bench(args, config):
    try:
        from bench.runner import QUICK, Bench  # a source checkout's bench/ package; not in the Docker image
    except ModuleNotFoundError as exc:
        if exc.name != "bench":
            raise
        raise RuntimeError("the bench needs the bench/ package of a source checkout: run it from the repository") from None

    data_dir = args.data_dir or str(config.data_dir / "bench")
    # A quick look must not overwrite the figures that bench/REPORT.md quotes.
    results = args.results or (os.path.join(data_dir, "quick-results") if args.quick else "bench/results")
    bench = Bench(config, data_dir=data_dir, results_dir=results, corpus=args.corpus or None,
                  params=QUICK if args.quick else None, progress=not args.quiet)
    summary = bench.run(args.only)
    lines = [f"{'figure':<48}{'target':>10}{'measured':>14}"]
    for target in summary["targets"]:
        value = "-" if target["value"] is None else target["value"]
        verdict = {True: "met", False: "MISSED", None: "not run"}[target["met"]]
        lines.append(f"{target['name']:<48}{target['target']:>10}{value!s:>14}  {verdict}")
    lines += [f"{name} failed: {why}" for name, why in summary["failed"].items()]
    lines.append(f"results in {results}")
    _emit(args, summary, "\n".join(lines))
    return 1 if summary["failed"] else 0


def cmd_db(args, config):
    """`db upgrade`: create or upgrade the PostgreSQL schema. `db copy --to B`: copy the index between backends."""
    from bot.service import embedder_for, store_for

    source_backend = "sqlite" if args.to == "postgres" else "postgres"
    # Its name and dimension. A new database takes the embedding of the index it will be copied from.
    embedder = embedder_for(config, follow=("postgres", "sqlite") if args.action == "upgrade" else (source_backend,))
    if args.action == "upgrade":
        from index.store import upgrade_database

        before, after = upgrade_database(config.store, model_name=embedder.name, dim=embedder.dim)
        text = (f"database schema is at version {after} already" if before == after
                else f"database schema upgraded from version {before} to {after}")
        _emit(args, {"schema_version": after, "was": before}, text)
        return 0
    from index.store.copy import copy_store

    source = store_for(config, embedder, backend=source_backend)
    try:
        target = store_for(config, embedder, backend=args.to)
        try:
            report = copy_store(source, target, progress=not args.quiet)
        finally:
            target.close()
    finally:
        source.close()

    def line(name, counts):
        return f"{name:<9} {counts.articles} articles, {counts.chunks} chunks, {counts.vectors} vectors, {counts.feeds} feeds"

    lines = [line(f"{source_backend}:", report.source), line(f"{args.to}:", report.target),
             f"copied {report.copied} articles ({report.present} already there), {report.feeds} feeds and "
             f"{report.follows} follows; "
             + ("the counts agree" if report.agrees else "the counts DIFFER: the target held other articles too")]
    _emit(args, report.to_json(), "\n".join(lines))
    return 0 if report.agrees else 1


def cmd_console(args, config):
    from bot.console import Console

    Console(_service(config)).run()
    return 0


def cmd_serve(args, config):
    token = os.environ.get("DISCORD_TOKEN", "").strip()
    if not token:
        raise ConfigError("DISCORD_TOKEN is not set; `newsdesk console` answers without Discord")
    if args.shards:
        try:
            config.discord = dataclasses.replace(config.discord, shard_ids=args.shards)
        except ConfigError as exc:
            raise ConfigError(f"--shards: {exc}") from None
    from bot.discordbot import run_bot

    run_bot(config, token)
    return 0


def cmd_worker(args, config):
    """Feeds polled beside any number of other workers; their headlines are left for the bot processes."""
    from bot.worker import run_worker

    run_worker(config, _service(config))
    return 0


def cmd_start(args, config):
    """The main job: make sure there is news to answer from, then run the bot or the console."""
    service = _service(config)
    if service.stats()["articles"] == 0:
        report = service.ingest([sample_news_dir()], progress=True)
        print(f"sample news: {report.summary()}", file=sys.stderr)
    if os.environ.get("DISCORD_TOKEN", "").strip():
        from bot.discordbot import run_bot

        run_bot(config, os.environ["DISCORD_TOKEN"].strip(), service=service)
        return 0
    from bot.console import Console

    Console(service).run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsdesk", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks on standard error")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_text, *, json_flag=True):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print one JSON object")
        return p

    def add_filters(p):
        p.add_argument("--since", help=f"only news since then: {', '.join(SINCE_CHOICES[:6])}, a date…")
        p.add_argument("--until", help="only news before then")
        p.add_argument("--outlet", action="append", help="only this outlet (repeatable)")

    p = command("ingest", cmd_ingest, "add feeds, pages, files or folders to the index")
    p.add_argument("sources", nargs="+", help="paths, folders or http(s) URLs")
    p.add_argument("--collection", default="shared", help="collection the articles join (default: shared)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = command("ask", cmd_ask, "answer a question from the indexed news, with sources")
    p.add_argument("question", nargs="+")
    p.add_argument("--mode", choices=RetrievalMode.ALL, default=RetrievalMode.HYBRID, help=argparse.SUPPRESS)
    add_filters(p)

    p = command("summary", cmd_summary, "summarize an article, a topic, or a period (default: the last 24 hours)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--article", help="article id (see `newsdesk search`)")
    group.add_argument("--topic", help="what to summarize")
    add_filters(p)

    p = command("search", cmd_search, "list the articles matching a query")
    p.add_argument("query", nargs="+")
    p.add_argument("-k", type=int, default=10, help="how many articles (default 10)")
    add_filters(p)

    command("stats", cmd_stats, "what is indexed")

    p = command("expire", cmd_expire, "remove old articles, or one article")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--older-than", help="e.g. 30d")
    group.add_argument("--article", help="remove this article id")

    p = command("eval", cmd_eval, "measure answer (qa), summary or topic-follow quality on a labelled JSONL file")
    p.add_argument("what", choices=("qa", "summary", "follow"))
    p.add_argument("--data", required=True, help="e.g. ../shared/data/newsqa/dev.jsonl or ../shared/data/cnndm/dev.jsonl")
    p.add_argument("--limit", type=int, help="only the first N rows")
    p.add_argument("--topics", help="eval follow: the follows to score, one JSON object a line "
                                    "({\"label\", \"query\", \"keywords\"}), e.g. bench/data/follow_topics_reuters.jsonl")
    p.add_argument("--abstention", action="store_true",
                   help="qa: index a hash-chosen half of the stories, ask every question, and report how "
                        "often questions about the other half get answered, across abstention thresholds")
    p.add_argument("--backend", action="append", choices=("sqlite", "postgres"),
                   help="qa: index and ask in this backend (repeatable, side by side; default [store] backend); "
                        "postgres uses a temporary schema in the database named by [store] url_env")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    p = command("bench", cmd_bench, "measure ingest, ask latency, vector search, memory and Discord load")
    p.add_argument("--only", action="append", metavar="SECTION",
                   help="run only this section (repeatable): ingest_throughput, ask_latency, footprint, "
                        "discord_load, vector_search, threads, abstention, scale_out, backends")
    p.add_argument("--data-dir", help="the persistent bench index (default: <index dir>/bench)")
    p.add_argument("--results", help="where the JSON results go (default: bench/results; with --quick, "
                                      "quick-results in the bench data dir)")
    p.add_argument("--corpus", action="append", metavar="JSONL",
                   help="corpus files for the bench index (default: ../shared/data/reuters and bbc corpus.jsonl)")
    p.add_argument("--quick", action="store_true", help="smaller inputs, for a quick look")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on standard error")

    p = command("db", cmd_db, "set up the PostgreSQL backend, or copy the index between backends")
    p.add_argument("action", choices=("upgrade", "copy"),
                   help="upgrade: create or upgrade the schema in the database named by [store] url_env; "
                        "copy: copy every article, vector and feed to the other backend, without embedding again")
    p.add_argument("--to", choices=("postgres", "sqlite"), default="postgres",
                   help="copy's target (default postgres: from the SQLite index in [index] dir)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    command("console", cmd_console, "ask questions in the terminal", json_flag=False)
    p = command("serve", cmd_serve, "run the Discord bot (needs DISCORD_TOKEN)", json_flag=False)
    p.add_argument("--shards", help="the gateway shards this process holds, e.g. 0-3 (instead of [discord] "
                                    "shard_ids; [discord] shard_count says of how many)")
    command("worker", cmd_worker, "poll the feeds beside other workers (several processes on PostgreSQL)",
            json_flag=False)
    command("start", cmd_start, "ingest the sample news if the index is empty, then serve or open the console",
            json_flag=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Model loading libraries are chatty; their progress output is not ours to show.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
        # trafilatura logs an ERROR for every page without text; the ingest report already says so.
        logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    try:
        config_path = args.config or next((p for p in DEFAULT_CONFIG_NAMES if os.path.exists(p)), None)
        config = load_config(config_path)
        return args.func(args, config)
    except KeyboardInterrupt:
        print("newsdesk: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place errors become a line for the user
        if args.verbose:
            log.exception("failed")
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"newsdesk: error: {message or type(exc).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
