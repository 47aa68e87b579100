"""The terminal front end: answers as text with numbered sources, and an interactive console.

The console reads questions from standard input, so it works typed by a person or piped.
"""

from __future__ import annotations

import shlex
import sys
from typing import TextIO

from bot.answer_types import CLOSEST_STORIES, Answer, SearchResult
from bot.service import NewsService
from index.store import SearchFilters
from index.timefilter import parse_since

HELP = """Type a question and press Enter. Commands:
  /summary                 digest of the last 24 hours
  /summary TOPIC [--since 7d]   what the news says about TOPIC
  /summary --article ID    one article's summary
  /search QUERY            matching articles
  /stats                   what is indexed
  /help, /quit"""


def format_answer(answer: Answer) -> str:
    lines = [answer.text]
    if answer.note:
        lines.append(f"({answer.note})")
    if answer.closest:
        lines.append(CLOSEST_STORIES)
    for result in answer.closest:
        lines.append(f"  - {result.label()}" + (f"  {result.url}" if result.url else ""))
    if answer.citations:
        lines.append("")
        lines.append("Sources:")
        for c in answer.citations:
            lines.append(f"  [{c.n}] {c.label()}")
            if c.url:
                lines.append(f"      {c.url}")
            if c.also_reported_by:
                lines.append(f"      also reported by: {', '.join(c.also_reported_by)}")
    return "\n".join(lines)


def format_results(results: list[SearchResult]) -> str:
    if not results:
        return "No matching articles."
    lines = []
    for i, r in enumerate(results, 1):
        date = r.published.strftime("%-d %b %Y") if r.published else "undated"
        lines.append(f"{i}. {r.title} — {r.outlet or 'unknown outlet'}, {date}")
        lines.append(f"   id: {r.article_id}" + (f"  url: {r.url}" if r.url and r.url != r.article_id else ""))
    return "\n".join(lines)


class Console:
    """A read-answer loop over a NewsService."""

    def __init__(self, service: NewsService, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
        self.service, self.stdin, self.stdout = service, stdin, stdout

    def run(self) -> None:
        interactive = self.stdin.isatty()
        if interactive:
            stats = self.service.stats()
            self._print(f"newsdesk console — {stats['articles']} articles indexed. /help for commands, /quit to leave.")
        while True:
            if interactive:
                self.stdout.write("\n> ")
                self.stdout.flush()
            line = self.stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            try:
                self._print(self.respond(line))
            except (ValueError, KeyError) as exc:
                self._print(f"error: {exc.args[0] if exc.args else exc}")

    def respond(self, line: str) -> str:
        if not line.startswith("/"):
            return format_answer(self.service.ask(line))
        command, _, rest = line.partition(" ")
        if command == "/help":
            return HELP
        if command == "/stats":
            stats = self.service.stats()
            return "\n".join(f"{k}: {v}" for k, v in stats.items())
        if command == "/search":
            return format_results(self.service.search(rest))
        if command == "/summary":
            return format_answer(self._summary(rest))
        raise ValueError(f"unknown command {command}; /help lists them")

    def _summary(self, rest: str) -> Answer:
        words = shlex.split(rest)
        article = since = None
        topic: list[str] = []
        while words:
            word = words.pop(0)
            if word == "--article" and words:
                article = words.pop(0)
            elif word == "--since" and words:
                since = parse_since(words.pop(0))
            else:
                topic.append(word)
        if article:
            return self.service.summarize_article(article)
        filters = SearchFilters(since=since)
        if topic:
            return self.service.summarize_topic(" ".join(topic), filters=filters)
        return self.service.digest(filters=filters)

    def _print(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()
