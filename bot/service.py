"""The one facade every front end uses: the CLI, the console, Discord and the evaluations.

It wires the index (store, retriever, ingest) to the answerers from config. Methods are
synchronous and safe to call from worker threads; Discord calls them through asyncio.to_thread.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

import numpy as np

from bot.answer_types import Answer, SearchResult
from bot.answerability import AnswerabilityCheck, Verdict
from bot.config import Config
from bot.extractive import ExtractiveAnswerer
from bot.feeds import collections_for, guild_collection
from bot.follows import FollowMatcher, Topic
from bot.summarize import ArticleSummarizer, DigestWriter, TopicSummarizer
from index.article import DEFAULT_COLLECTION, ArticleMeta
from index.chunk import Chunker
from index.embed import Embedder, backend_of, load_embedder, new_index_backend
from index.ingest import Ingestor, IngestReport
from index.retrieve import Hit, RetrievalMode, Retriever
from index.sources.common import one_line
from index.sources.fetch import FetchLimits
from index.store import (
    FOLLOW_FORMATS, FOLLOW_LEVELS, Announcement, Follow, NewsStore, SearchFilters, open_store, recorded_model_name,
)
from index.timefilter import time_filter_in

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 1000
BACKFILL_ARTICLES = 500  # a new follow's `since` looks at the newest of these at most
NOTHING_ANSWERS = "I found nothing in the indexed news that answers this."
NOTHING_ON_TOPIC = "I found nothing in the indexed news about that."


def embedder_for(config: Config, *, follow: Sequence[str] | None = None) -> Embedder:
    """The embedding model as [index] sets it. With embed_backend "auto", it follows the backend an
    existing index was built with (the stores named in `follow`, first found; default the configured
    one), so a data folder moved to another machine, or workers sharing a database, still agree; a
    new index gets the fastest backend on this CPU that keeps quality (`new_index_backend`)."""
    idx = config.index
    chosen = idx.embed_backend
    if chosen == "auto":
        recorded = None
        for backend in (config.store.backend,) if follow is None else follow:
            recorded = recorded_model_name(dataclasses.replace(config.store, backend=backend), data_dir=config.data_dir)
            if recorded:
                break
        chosen = backend_of(recorded) if recorded else new_index_backend()
        if chosen == "torch-bf16" and new_index_backend() != "torch-bf16":
            log.warning("this index was built with torch-bf16, which is slow on a CPU without AMX: "
                        "build it anew here for a faster backend (README, \"Embedding backends\")")
    return load_embedder(idx.model, backend=chosen, batch_size=idx.batch_size, cache_dir=config.model_cache_dir)


def store_for(config: Config, embedder: Embedder, *, backend: str | None = None) -> NewsStore:
    """The store config.toml names (or `backend`), opened for the embedder's vectors."""
    idx = config.index
    settings = dataclasses.replace(config.store, backend=backend) if backend else config.store
    return open_store(
        settings, data_dir=config.data_dir, model_name=embedder.name, dim=embedder.dim,
        exact_search_max=idx.exact_search_max, hnsw_m=idx.hnsw_m, hnsw_ef_search=idx.hnsw_ef_search,
        search_threads=config.retrieval.search_threads,
    )


class NewsService:
    def __init__(self, config: Config, *, embedder: Embedder | None = None, llm_client=None) -> None:
        self.config = config
        self.embedder = embedder or embedder_for(config)
        idx = config.index
        self.store = store_for(config, self.embedder)
        self.retrievers = {mode: Retriever(self.store, self.embedder, config.retrieval, mode=mode) for mode in RetrievalMode.ALL}
        ans = config.answer
        self.extractive = ExtractiveAnswerer(max_sentences=ans.max_sentences, max_words=ans.max_words)
        self.answerability = AnswerabilityCheck(abstain_below=ans.abstain_below)
        self.article_summarizer = ArticleSummarizer(sentences=ans.summary_sentences)
        # A followed topic's new story says what happened in a sentence or two, picked the same way.
        self.story_summarizer = ArticleSummarizer(sentences=2)
        self.topic_summarizer = TopicSummarizer()
        self.digest_writer = DigestWriter(stories=ans.digest_stories)
        self.llm = None
        if config.llm.base_url:
            from bot.llm import LLMAnswerer  # the openai client is only loaded when configured

            self.llm = LLMAnswerer(config.llm, embedder=self.embedder, fallback=self.extractive, client=llm_client)
        fetch = config.fetch
        self.fetch_limits = FetchLimits(
            timeout_seconds=fetch.timeout_seconds, max_bytes=fetch.max_page_bytes, max_redirects=fetch.max_redirects,
            user_agent=fetch.user_agent,
        )
        self.ingestor = Ingestor(
            self.store, self.embedder,
            chunker=Chunker(
                self.embedder, max_tokens=min(idx.chunk_tokens, self.embedder.max_tokens - 32),
                overlap_sentences=idx.chunk_overlap_sentences,
            ),
            near_duplicate_threshold=idx.near_duplicate_threshold,
            matcher=FollowMatcher(self.store.follows, threshold=config.follows.match_threshold,
                                  encode=self.embedder.encode,
                                  delay=timedelta(minutes=config.follows.delivery_window_minutes),
                                  max_age=timedelta(hours=config.follows.max_age_hours)),
        )
        self._write_lock = threading.Lock()

    @functools.cached_property
    def loader(self):
        """Readers for sources the operator names (CLI, config feeds); built on first use (slow imports)."""
        return self._make_loader(self.fetch_limits)

    @functools.cached_property
    def guarded_loader(self):
        """Readers for URLs that server members supply: loopback, private, link-local and metadata
        addresses are refused (after DNS and after every redirect) unless `[fetch] allow_hosts` names the host."""
        limits = dataclasses.replace(self.fetch_limits, refuse_private=True, allow_hosts=tuple(self.config.fetch.allow_hosts))
        return self._make_loader(limits, local_files=False)  # nor may they read the bot's own disk

    def _make_loader(self, limits: FetchLimits, *, local_files: bool = True):
        from index.sources.fetch import Fetcher
        from index.sources.loader import SourceLoader

        fetch = self.config.fetch
        return SourceLoader(
            Fetcher(limits), max_feed_items=fetch.max_feed_items, fetch_linked_pages=fetch.fetch_linked_pages,
            is_known=self.store.has_article, local_files=local_files,  # a poll skips pages already held
            max_file_bytes=fetch.max_page_bytes,  # a page or feed on disk is bounded like one fetched (JSONL streams)
        )

    # -- questions -------------------------------------------------------------------------------

    def retrieve(self, query: str, *, filters: SearchFilters | None = None, k: int | None = None,
                 mode: str = RetrievalMode.HYBRID, timing: dict[str, float] | None = None) -> list[Hit]:
        return self.retrievers[mode].run(one_line(query)[:MAX_QUESTION_CHARS], filters=filters, k=k, timing=timing)

    def ask(
        self,
        question: str,
        *,
        filters: SearchFilters | None = None,
        history: tuple[str, ...] | list[str] = (),
        mode: str = RetrievalMode.HYBRID,
        on_text: Callable[[str], None] | None = None,
    ) -> Answer:
        """A cited answer. `history` holds earlier questions of the conversation, newest last."""
        question = one_line(question)  # normalized as stored text is: "NA\u200bTO" must still find NATO
        if not question:
            raise ValueError("Ask a question, e.g. “What happened in Iraq this week?”")
        started = time.perf_counter()
        filters = filters or SearchFilters()
        if filters.since is None:
            since = time_filter_in(question)
            if since:
                filters = dataclasses.replace(filters, since=since)
        # A follow-up ("and what did Iran say?") is searched with the question it follows.
        query = " ".join([*list(history)[-1:], question])
        steps: dict[str, float] = {}
        hits = self.retrieve(query, filters=filters, mode=mode, timing=steps)
        retrieved = time.perf_counter()
        # The baselines' rankings lack the other's scores, which the abstention weighs.
        answer = self.answer_from(question, hits, on_text=on_text, abstain=mode == RetrievalMode.HYBRID, searched=query)
        done = time.perf_counter()
        answer.timing_ms.update(steps)
        answer.timing_ms.update(
            retrieve_ms=(retrieved - started) * 1000, answer_ms=(done - retrieved) * 1000, total_ms=(done - started) * 1000
        )
        return answer

    def answer_from(self, question: str, hits: list[Hit], *, on_text: Callable[[str], None] | None = None,
                    abstain: bool = True, searched: str | None = None) -> Answer:
        """The answer step alone: the LLM when one is configured, else the extractive engine; first,
        unless `abstain` is false, the check that the passages answer the question at all (weighed
        on what was `searched`: a follow-up with the question it follows)."""
        verdict = self.answerability.run(question, hits, searched=searched) if abstain else None
        if verdict is not None and not verdict.answerable:
            return self._abstention(hits, verdict)
        if self.llm is not None:
            answer = self.llm.run(question, hits, on_text=on_text)
        else:
            answer = self.extractive.run(question, hits)
        if answer.found:
            return answer
        # The answerer itself found nothing (the model said the sources do not answer): the same reply.
        return self._abstention(hits, verdict or self.answerability.run(question, hits, searched=searched), answer)

    def _abstention(self, hits: list[Hit], verdict: Verdict, answer: Answer | None = None, *,
                    nothing: str = NOTHING_ANSWERS) -> Answer:
        """"The news does not say", with the closest stories (for the front ends to list) when any
        is near; `answer` is the answerer's own "nothing found", whose mode, timings and note (why a
        model's answer was not used) are kept."""
        # Near but not enough: the closest stories are offered down to half the threshold.
        near = verdict.confidence >= self.answerability.abstain_below / 2
        closest = search_results(hits, self.config.answer.closest_stories) if near else []
        if answer is None:
            return Answer(text=nothing, mode="extractive", citations=[], found=False, closest=closest)
        return dataclasses.replace(answer, text=nothing, citations=[], found=False, closest=closest)

    def summarize_article(self, article_id: str, *, collections: tuple[str, ...] | None = None) -> Answer:
        """One article's summary. Ids are not secret, so a front end serving one server passes its
        `collections`: another server's article is then reported as not found."""
        found = self.store.article(article_id, collections=collections)
        if found is None:
            raise KeyError(f"no article with id {article_id!r}; `newsdesk search` lists ids")
        started = time.perf_counter()
        answer = self.article_summarizer.run(*found)
        answer.timing_ms["total_ms"] = (time.perf_counter() - started) * 1000
        return answer

    def story_summary(self, meta: ArticleMeta, text: str) -> Answer:
        """What happened in an article a follow matched: its gist in one or two cited sentences."""
        return self.story_summarizer.run(meta, text)

    def summarize_topic(self, topic: str, *, filters: SearchFilters | None = None,
                        on_text: Callable[[str], None] | None = None) -> Answer:
        topic = one_line(topic)
        if not topic:
            raise ValueError("Name a topic to summarize.")
        started = time.perf_counter()
        hits = self.retrieve(topic, filters=filters, k=12)
        verdict = self.answerability.run(topic, hits)
        answer = None  # a topic the news has nothing on gets no off-topic filler
        if verdict.answerable and self.llm is not None:
            answer = self.llm.run(topic, hits, on_text=on_text, fallback=self.topic_summarizer.run,
                                  instruction=f"Summarize what the sources report about: {topic}")
        elif verdict.answerable:
            answer = self.topic_summarizer.run(topic, hits)
        if answer is None or not answer.found:
            answer = self._abstention(hits, verdict, answer, nothing=NOTHING_ON_TOPIC)
        answer.timing_ms["total_ms"] = (time.perf_counter() - started) * 1000
        return answer

    def digest(self, *, filters: SearchFilters | None = None, period: str | None = None) -> Answer:
        """The main stories of a period (default: the last 24 hours), grouped, each with its sources."""
        started = time.perf_counter()
        filters = filters or SearchFilters()
        since = filters.since or datetime.now(timezone.utc) - timedelta(hours=24)
        rows = self.store.recent_articles(SearchFilters(since=since, until=filters.until, collections=filters.collections))
        ledes = self.store.lede_vectors([meta.id for meta, _ in rows])
        articles = [(meta, text) for meta, text in rows if meta.id in ledes]
        article_vectors = [ledes[meta.id] for meta, _ in articles]
        matrix = np.array(article_vectors, dtype=np.float32).reshape(len(articles), self.embedder.dim)
        answer = self.digest_writer.run(articles, matrix, period=period or f"since {since:%d %b %Y %H:%M} UTC")
        answer.timing_ms["total_ms"] = (time.perf_counter() - started) * 1000
        return answer

    def search(self, query: str, *, filters: SearchFilters | None = None, k: int = 10) -> list[SearchResult]:
        """Matching articles, best first, one row per article."""
        return search_results(self.retrieve(query, filters=filters, k=k * 2), k)

    # -- the index -------------------------------------------------------------------------------

    def ingest(
        self, sources: list[str], *, collection: str = DEFAULT_COLLECTION, progress: bool = False, untrusted: bool = False,
        announce: Announcement | None = None, backlog: bool = False,
    ) -> IngestReport:
        """Reads and indexes sources. `untrusted` sources came from server members (Discord): they
        may only be URLs, fetched with the private-address guard. With `announce`, the new articles'
        headlines are queued for that channel with the articles themselves. `backlog`: the first
        read of a feed, whose old items no follow is told of."""
        loader = self.guarded_loader if untrusted else self.loader
        with self._write_lock:
            return self.ingestor.run(loader.run(sources), collection=collection, progress=progress, announce=announce,
                                     backlog=backlog)

    def follow(self, topic: Topic, *, guild_id: int, channel_id: int, level: str | None = None, created_by: int = 0,
               limit: int = 50, since: datetime | None = None, feed_url: str = "",
               format: str = "summary") -> tuple[Follow, int]:
        """A new follow of the server (of one feed's items, with `feed_url`), its topic's meaning
        embedded once; ValueError when the registry refuses it. Without a `level`, a topic that
        names a section of the news ("technology") is followed at broad, any other at normal.
        With `since`, the server's articles stored since then are matched too (the newest
        BACKFILL_ARTICLES at most); returns the follow and how many of those matched."""
        if (level is not None and level not in FOLLOW_LEVELS) or format not in FOLLOW_FORMATS:
            raise ValueError(f"level: one of {', '.join(FOLLOW_LEVELS)}; format: one of {', '.join(FOLLOW_FORMATS)}")
        vector = self.embedder.encode([topic.meaning])[0] if topic.meaning else np.zeros(self.embedder.dim, np.float32)
        if level is None:
            level = "broad" if topic.section else "normal"
        follow = self.store.follows.add(guild_id=guild_id, channel_id=channel_id, topic=topic.text, vector=vector,
                                        level=level, created_by=created_by, limit=limit, feed_url=feed_url,
                                        format=format)
        self.ingestor.matcher.forget()  # the next batch matches it
        if since is None:
            return follow, 0
        filters = SearchFilters(since=since, collections=collections_for(guild_id))
        stored = [self.ingestor.stored_with_vectors(meta, text, collection=guild_collection(guild_id))
                  for meta, text in self.store.recent_articles(filters, limit=BACKFILL_ARTICLES)]
        matches = self.ingestor.matcher.run([found for found in stored if found is not None], follows=[follow],
                                            any_age=True)
        for match in matches:
            self.store.outbox.add(match)
        return follow, len(matches)

    def unfollow(self, follow_id: int, *, guild_id: int) -> bool:
        """Remove one of the server's follows; False if it has none with that id."""
        removed = self.store.follows.remove(follow_id, guild_id=guild_id)
        self.ingestor.matcher.forget()
        return removed

    def article(self, article_id: str):
        """(metadata, text) of a stored article, or None."""
        return self.store.article(article_id)

    def expire(self, older_than: timedelta, *, collections: tuple[str, ...] | None = None) -> list[str]:
        """Ids of the articles older than `older_than` removed; see `remove` for `collections`."""
        return self._remove(before=datetime.now(timezone.utc) - older_than, collections=collections)

    def remove(self, article_id: str, *, collections: tuple[str, ...] | None = None) -> list[str]:
        """The article's id if it was removed. The CLI removes from the whole index; Discord passes a
        server's own collection, so an admin can only take out what that server added."""
        return self._remove(article_id=article_id, collections=collections)

    def _remove(self, **which) -> list[str]:
        with self._write_lock, self.store.writer() as writer:
            removed = writer.remove_articles(**which)
            writer.commit()
        return removed

    def stats(self, *, collections: tuple[str, ...] | None = None) -> dict:
        return self.store.stats(SearchFilters(collections=collections))

    def titles(self, prefix: str = "", *, collections: tuple[str, ...] | None = None, limit: int = 25):
        return self.store.titles(prefix, collections=collections, limit=limit)

    def outlets(self, *, collections: tuple[str, ...] | None = None, prefix: str = "", limit: int = 25) -> list[str]:
        return self.store.outlets(collections=collections, prefix=prefix, limit=limit)


def search_results(hits: list[Hit], k: int) -> list[SearchResult]:
    """The first `k` articles of the hits, best first, one row each."""
    if k < 1:
        return []
    results: dict[str, SearchResult] = {}
    for hit in hits:
        if hit.article.id not in results:
            results[hit.article.id] = SearchResult(
                hit.article.id, hit.article.title, hit.article.outlet, hit.article.url, hit.article.published,
                " ".join(hit.text.split())[:300], hit.score,
            )
            if len(results) == k:
                break
    return list(results.values())
