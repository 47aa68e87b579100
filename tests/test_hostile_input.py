"""Hostile and broken input, one table of cases, each through the path a user takes:
`NewsService.ingest` of a file or URL (as `newsdesk ingest`, `/ingest` and feed polls do), or
`NewsService.ask` for questions.

Every case must end, within a bounded time, with either a clear error (a Failure whose reason is
one readable line, or a ValueError for a question) or a sensible result; a failing case must leave
the index exactly as it was, and no case may leave it inconsistent. The index is never empty: the
bundled sample article is ingested first, so "unchanged" means something.

The 50 MB pages and the 10,000-item feed are generated while they are served (nothing that large is
stored), and are ingested in a child process that reports its peak memory growth.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SEED, shared_data
from fakes import FakeEmbedder
from http_fixture import LocalHTTPServer, http_server  # noqa: F401 - the fixture
from index_invariants import check_index
from openai_fake import closed_port

from bot.answer_types import Answer
from bot.config import Config, ConfigError, load_config
from bot.service import NewsService

FETCH_TIMEOUT = 1.0  # seconds; the servers that never answer or trickle are cut off at this
CASE_BUDGET = 60.0  # seconds: generous, only to show that nothing hangs; real cases take far less
MEMORY_BUDGET_MB = 150  # peak growth while ingesting a 50 MB page or a 10,000-item feed
PROBE = Path(__file__).with_name("memory_probe.py")
FIXTURES = "feeds_and_html"

# Characters that must never reach the index: invisible, bidi controls, terminal and C1 controls.
UNWANTED = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\x00-\x08\x0e-\x1f\x7f-\x9f]")
STORY = (
    "The harbour council voted on Monday to rebuild the old ferry pier before the summer season. "
    "Officials said the work would cost four million euros and take nine months. "
    "Fishermen welcomed the decision but asked for a temporary landing stage during the works."
)


def story_html(title: str = "Council votes to rebuild the ferry pier", body: str = STORY, head: str = "") -> str:
    paragraphs = "".join(f"<p>{sentence}.</p>" for sentence in body.split(". "))
    return (f"<html><head>{head}<title>{title}</title></head><body><article><h1>{title}</h1>{paragraphs}"
            "</article></body></html>")


def rss(items: list[tuple[str, str, str]], *, prolog: str = "") -> str:
    entries = "".join(f"<item><title>{t}</title><link>{link}</link><description>{d}</description></item>"
                      for t, link, d in items)
    return (f'<?xml version="1.0" encoding="utf-8"?>{prolog}<rss version="2.0"><channel><title>Harbour News'
            f"</title>{entries}</channel></rss>")


BILLION_LAUGHS = rss([("&lol9;", "https://harbour.example/lol", "&lol9;")], prolog=(
    '<!DOCTYPE rss [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">' for n in range(1, 10))
    + "]>"
))
XXE = '<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
# The same declarations in front of a page: HTML parsers do not expand them, so "&lol9;" stays text.
HTML_BOMB = "<!DOCTYPE html [" + BILLION_LAUGHS.split("[", 1)[1].split("]>", 1)[0] + "]>" + story_html(
    body=STORY + " &lol9; &lol9;")


# -- the cases ---------------------------------------------------------------------------------


@dataclass
class Env:
    """What a case builds its input with: a folder for files, the local HTTP server, the service."""

    folder: Path
    server: LocalHTTPServer
    service: NewsService

    def file(self, name: str, data: bytes | str) -> str:
        path = self.folder / name
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return str(path)

    def url(self, path: str, data: bytes | str, content_type: str = "text/html; charset=utf-8") -> str:
        self.server.add(path, data, content_type=content_type)
        return self.server.url(path)


@dataclass(frozen=True)
class Case:
    """One hostile input. `ingest` gives the sources to ingest; `ask`, the question to ask.

    `error` is a regex the (first) failure reason or the question's error must match: the case
    must add nothing. Without it the case must add an article (`added`: how many, when known) or,
    for a question, answer (`found`: whether it found something, when known). `check` looks
    further at the service and the report afterwards.
    """

    name: str
    ingest: Callable[[Env], list[str]] | None = None
    ask: str | None = None
    error: str | None = None
    added: int | None = None
    found: bool | None = None
    untrusted: bool = False
    linked_pages: bool = False
    memory: bool = False  # ingest in a child process and bound its peak memory growth
    check: Callable[[Env, dict], None] | None = None


def no_unwanted_characters(env: Env, report: dict) -> None:
    for article_id in report["added_ids"]:
        meta, text = env.service.article(article_id)
        assert not UNWANTED.search(meta.title + text), (meta.title, text[:200])


def finds(word: str) -> Callable[[Env, dict], None]:
    """The added article is found by a word that hostile characters were hiding inside."""

    def check(env: Env, report: dict) -> None:
        no_unwanted_characters(env, report)
        assert {r.article_id for r in env.service.search(word)} & set(report["added_ids"]), word

    return check


def titled(expected: str, then: Callable[[Env, dict], None]) -> Callable[[Env, dict], None]:
    def check(env: Env, report: dict) -> None:
        (article_id,) = report["added_ids"]
        assert env.service.article(article_id)[0].title == expected
        then(env, report)

    return check


def text_contains(*words: str) -> Callable[[Env, dict], None]:
    def check(env: Env, report: dict) -> None:
        texts = " ".join(env.service.article(a)[0].title + " " + env.service.article(a)[1] for a in report["added_ids"])
        assert "\ufffd" not in texts
        for word in words:
            assert word in texts, word

    return check


def no_request_to(path: str) -> Callable[[Env, dict], None]:
    def check(env: Env, report: dict) -> None:
        assert path not in env.server.requests, env.server.requests

    return check


def small_text(limit: int) -> Callable[[Env, dict], None]:
    def check(env: Env, report: dict) -> None:
        for article_id in report["added_ids"]:
            assert len(env.service.article(article_id)[1]) < limit

    return check


def fixture(relative: str) -> Callable[[Env], list[str]]:
    return lambda env: [str(shared_data(f"{FIXTURES}/{relative}"))]


def truncated(relative: str, share: float, name: str) -> Callable[[Env], list[str]]:
    def make(env: Env) -> list[str]:
        data = shared_data(f"{FIXTURES}/{relative}").read_bytes()
        return [env.file(name, data[: int(len(data) * share)])]

    return make


def big_sparse_file(env: Env) -> list[str]:
    """A 50 MB page on disk: text at the head, the rest a hole in the file (nothing written)."""
    path = env.folder / "huge.html"
    with path.open("wb") as handle:
        handle.write(story_html().encode() * 200)
        handle.truncate(50_000_000)
    return [str(path)]


def feed_of(count: int) -> bytes:
    return rss([(f"Item {i}", f"https://big.example/{i}", f"Story {i}: the council met on day {i} to vote on "
                 f"budget line {i} and {i * 7} residents attended.") for i in range(count)]).encode()


def redirect_chain(env: Env) -> list[str]:
    for n in range(12):
        env.server.add_redirect(f"/hop{n}", f"/hop{n + 1}")
    return [env.server.url("/hop0")]


def redirect_loop(env: Env) -> list[str]:
    env.server.add_redirect("/ping", "/pong")
    env.server.add_redirect("/pong", "/ping")
    return [env.server.url("/ping")]


def teaser_with_silent_page(env: Env) -> list[str]:
    env.server.add_never_answer("/silent-story")
    feed = rss([("Pier works begin", env.server.url("/silent-story"), "Works on the pier begin today.")])
    return [env.url("/teaser.xml", feed, "application/rss+xml")]


def external_dtd(env: Env) -> list[str]:
    env.server.add("/evil.dtd", '<!ENTITY xxe SYSTEM "file:///etc/passwd">', content_type="application/xml-dtd")
    prolog = f'<!DOCTYPE rss SYSTEM "{env.server.url("/evil.dtd")}">'
    feed = rss([("Pier news", "https://harbour.example/pier", STORY)], prolog=prolog)
    return [env.file("external-dtd.xml", feed)]


def parameter_entity(env: Env) -> list[str]:
    env.server.add("/evil.dtd", '<!ENTITY xxe SYSTEM "file:///etc/passwd">', content_type="application/xml-dtd")
    prolog = f'<!DOCTYPE rss [<!ENTITY % remote SYSTEM "{env.server.url("/evil.dtd")}"> %remote;]>'
    return [env.file("parameter-entity.xml", rss([("&xxe;", "https://harbour.example/x", "&xxe;")], prolog=prolog))]


def private_address(env: Env) -> list[str]:
    return [env.url("/private-story", story_html())]


JSON_FEED = {"version": "https://jsonfeed.org/version/1.1", "title": "Harbour JSON",
             "items": [{"id": "1", "url": "https://harbour.example/j1", "title": "Pier", "content_text": STORY}]}
LATIN = "Café Fähre Ærø: the harbour council of São Tomé voted on Monday to rebuild the old ferry pier. " * 3

CASES = [
    # -- files that are empty, binary or cut short
    Case("empty file", ingest=lambda env: [env.file("empty.txt", b"")], error="^empty file$"),
    Case("only whitespace", ingest=lambda env: [env.file("blank.html", " \n\t\n ")], error="^empty file$"),
    Case("PNG named .html", ingest=lambda env: [env.file("photo.html", b"\x89PNG\r\n\x1a\n" + bytes(512))],
         error=r"^binary file \(looks like PNG\)$"),
    Case("random bytes", ingest=lambda env: [env.file("noise.txt", bytes(range(256)) * 64)],
         error=r"^binary file \(contains NUL bytes\)$"),
    Case("PDF named .xml", ingest=lambda env: [env.file("feed.xml", b"%PDF-1.4\n" + bytes(300))],
         error=r"^binary file \(looks like PDF\)$"),
    Case("truncated gzip", ingest=lambda env: [env.file("feed.rss", gzip.compress(rss([]).encode())[:20])],
         error=r"^binary file \(looks like gzip\)$"),
    Case("truncated feed (guardian.rss, first third)", added=None,
         ingest=truncated("rss/rss-parser/input/guardian.rss", 1 / 3, "guardian-cut.rss")),
    Case("truncated page (bbc-1, first quarter)", added=1,
         ingest=truncated("html/readability/test-pages/bbc-1/source.html", 1 / 4, "bbc-cut.html")),
    Case("truncated JSON Feed", ingest=lambda env: [env.file("feed.json", json.dumps(JSON_FEED)[:80])],
         error="^not valid JSON"),
    Case("a 50 MB page on disk", ingest=big_sparse_file, error=r"^file larger than 5 MB$"),
    Case("no such file", ingest=lambda env: [str(env.folder / "missing.rss")], error="^no such file$"),
    # -- malformed fixtures from parser test suites
    Case("invalid RSS fixture", ingest=fixture("rss/feed-rs/rss2/rss_2.0_invalid_1.xml"),
         error=r"^not a readable feed: .*\(line \d+, column \d+\)$"),
    Case("Atom entries without title or text", ingest=fixture("rss/rss-parser/input/missing-fields.atom"),
         error="^item 1: no title, no text$"),
    Case("Atom with incomplete fields", ingest=fixture("rss/rss-parser/input/incomplete-fields.atom"),
         error="^item 1: no title, no text$"),
    Case("unrecognized RSS elements", added=1, ingest=fixture("rss/rss-parser/input/unrecognized.rss")),
    # -- XML attacks
    Case("billion laughs", ingest=lambda env: [env.file("lol.xml", BILLION_LAUGHS)],
         error=r"^refused: the feed declares XML entities"),
    Case("external entity to /etc/passwd",
         ingest=lambda env: [env.file("xxe.xml", rss([("&xxe;", "https://harbour.example/x", "&xxe;")], prolog=XXE))],
         error=r"^refused: the feed declares XML entities"),
    Case("parameter entity from a remote DTD", ingest=parameter_entity,
         error=r"^refused: the feed declares XML entities", check=no_request_to("/evil.dtd")),
    Case("external DTD is never fetched", ingest=external_dtd, added=1, check=no_request_to("/evil.dtd")),
    Case("entity bomb in an HTML page", added=1, check=small_text(5000),
         ingest=lambda env: [env.file("lol.html", HTML_BOMB)]),
    # -- JSON attacks
    Case("JSON Feed nested 100,000 deep",
         ingest=lambda env: [env.file("deep.json", '{"version": "https://jsonfeed.org/version/1.1", "items": '
                                      + "[" * 100_000 + "]" * 100_000 + "}")], error="^not valid JSON"),
    Case("JSONL line nested 100,000 deep", ingest=lambda env: [env.file("deep.jsonl", "[" * 100_000 + "]" * 100_000)],
         error="^line 1: not valid JSON"),
    Case("JSONL with good, binary and broken lines", added=1,
         ingest=lambda env: [env.file("mixed.jsonl", json.dumps({"title": "Pier", "text": STORY}).encode()
                                      + b"\n\xff\xfe garbage\n{\"title\": \n")]),
    # -- pages with nothing to read, or too much
    Case("HTML with only scripts", error="^no article text found$",
         ingest=lambda env: [env.file("scripts.html", "<html><head><script>var story = 'The council met';</script>"
                                      "</head><body><script>document.write('" + STORY + "')</script>"
                                      "<noscript></noscript><style>p {}</style></body></html>")]),
    Case("HTML with 120,000 elements", error=r"^page too large to extract \(\d+ HTML elements\)$",
         ingest=lambda env: [env.file("many.html", "<html><body>" + "<p>x</p>" * 120_000 + "</body></html>")]),
    Case("HTML nested 20,000 deep", error="^no article text found$",
         ingest=lambda env: [env.file("nested.html", "<html><body>" + "<div>" * 20_000 + STORY + "</div>" * 20_000
                                      + "</body></html>")]),
    # -- invisible, bidi and control characters
    Case("zero-width characters inside words", added=1, check=finds("fishermen"),
         ingest=lambda env: [env.file("zw.html", story_html(body=STORY.replace("Fishermen", "Fish\u200bermen")
                                                            .replace("harbour", "har\u200dbour\u2060")))]),
    Case("right-to-left overrides", added=1, check=titled("Council votes on the pier", finds("pier")),
         ingest=lambda env: [env.file("rtl.html", story_html(title="\u202eCouncil votes\u202c on the pier",
                                                             body=STORY.replace("pier", "\u202epier\u202c")))]),
    Case("terminal escapes in a text page", added=1, check=no_unwanted_characters,
         ingest=lambda env: [env.file("ansi.txt", "Council \x1b]0;pwned\x07votes\x1b[2J\n" + STORY.replace(
             "Monday", "Monday\x1b[31m") + "\x9b31m\n")]),
    Case("control characters in a JSONL corpus", added=1, check=no_unwanted_characters,
         ingest=lambda env: [env.file("ctl.jsonl", json.dumps({"title": "Pier\u001b[2J\u0007 vote",
                                                               "text": STORY + "\u0085\u009b"}))]),
    # -- wrong or missing encodings
    Case("UTF-16 with a BOM", added=1, check=text_contains("ferry pier"),
         ingest=lambda env: [env.file("utf16.html", story_html().encode("utf-16"))]),
    Case("UTF-16 without a BOM", error=r"^binary file \(contains NUL bytes\)$",
         ingest=lambda env: [env.file("utf16le.html", story_html().encode("utf-16-le"))]),
    Case("UTF-8 declared as ISO-8859-1", added=1, check=text_contains("Café", "São Tomé"),
         ingest=lambda env: [env.file("mislabelled.html", story_html(body=LATIN, head='<meta charset="iso-8859-1">'))]),
    Case("Windows-1252 served as UTF-8", added=1, check=text_contains("Café", "Fähre"),
         ingest=lambda env: [env.url("/cp1252", story_html(body=LATIN).encode("cp1252"))]),
    Case("an unknown charset label", added=1, check=text_contains("Café"),
         ingest=lambda env: [env.file("bogus.html", story_html(body=LATIN, head='<meta charset="x-bogus-42">')
                                      .encode("latin-1"))]),
    Case("Latin-1 feed with no declaration (uolNoticias.rss)", added=15, check=text_contains("simulações", "Líder"),
         ingest=fixture("rss/rss-parser/input/uolNoticias.rss")),
    # -- servers that misbehave
    Case("a 50 MB page", memory=True, error=r"^page larger than 5 MB$",
         ingest=lambda env: (env.server.add_generated("/huge", 50_000_000), [env.server.url("/huge")])[1]),
    Case("a 50 MB page without Content-Length", memory=True, error=r"^page larger than 5 MB$",
         ingest=lambda env: (env.server.add_generated("/huge", 50_000_000, send_length=False),
                             [env.server.url("/huge")])[1]),
    Case("a feed of 10,000 items", memory=True, added=500,  # [fetch] max_feed_items
         ingest=lambda env: [env.url("/big.xml", feed_of(10_000), "application/rss+xml")]),
    Case("a gzip bomb", error=r"^page larger than 5 MB$",
         ingest=lambda env: (env.server.add("/bomb", gzip.compress(b"\0" * 30_000_000),
                                            headers={"Content-Encoding": "gzip"}), [env.server.url("/bomb")])[1]),
    Case("a server that never answers", error=rf"^timed out after {FETCH_TIMEOUT:g} s$",
         ingest=lambda env: (env.server.add_never_answer("/silent"), [env.server.url("/silent")])[1]),
    Case("a server that trickles bytes", error=rf"^timed out after {FETCH_TIMEOUT:g} s$",
         ingest=lambda env: (env.server.add_trickle("/slow", interval=0.05), [env.server.url("/slow")])[1]),
    Case("a redirect loop", ingest=redirect_loop, error="^redirect loop$"),
    Case("a redirect to itself", error="^redirect loop$",
         ingest=lambda env: (env.server.add_redirect("/self", "/self"), [env.server.url("/self")])[1]),
    Case("twelve redirects", ingest=redirect_chain, error="^too many redirects$"),
    Case("a redirect to file://", error=r"^not http\(s\)$",
         ingest=lambda env: (env.server.add_redirect("/to-file", "file:///etc/passwd"),
                             [env.server.url("/to-file")])[1]),
    Case("HTTP 500", error="^HTTP 500$",
         ingest=lambda env: (env.server.add_status("/error", 500), [env.server.url("/error")])[1]),
    Case("connection refused", ingest=lambda env: [f"http://127.0.0.1:{closed_port()}/feed"],
         error="^connection refused$"),
    Case("a port out of range", ingest=lambda env: ["http://127.0.0.1:99999/feed"], error="^bad port in URL$"),
    Case("an image served as HTML", error=r"^binary file \(looks like JPEG\)$",
         ingest=lambda env: [env.url("/photo", b"\xff\xd8\xff\xe0" + bytes(400), "text/html")]),
    Case("XML that is not a feed", error="^not a feed$",
         ingest=lambda env: [env.url("/data.xml", '<?xml version="1.0"?><catalog><book id="1"/></catalog>',
                                     "application/xml")]),
    Case("a feed with no items", error="^feed has no items$",
         ingest=lambda env: [env.url("/empty.xml", '<?xml version="1.0"?><rss version="2.0"></rss>',
                                     "application/rss+xml")]),
    Case("a teaser whose page never answers", linked_pages=True, added=1,
         ingest=teaser_with_silent_page,
         check=lambda env, report: assert_reasons(report, rf"^kept the feed's teaser; the page could not be read: "
                                                         rf"timed out after {FETCH_TIMEOUT:g} s$")),
    # -- what server members may not make the bot read
    Case("a member's URL to a private address", untrusted=True, ingest=private_address,
         error=r"^refused: private address 127\.0\.0\.1$", check=no_request_to("/private-story")),
    Case("a member's file:// URL", untrusted=True, ingest=lambda env: ["file:///etc/passwd"], error=r"^not http\(s\)$"),
    Case("a member's local path", untrusted=True, ingest=lambda env: [str(SEED)],
         error=r"^only http\(s\) URLs can be read here$"),
    # -- questions
    Case("a question of 10,000 characters", ask=("Why did NATO suspend its training in Iraq? " * 240)[:10_000],
         found=True),
    Case("an empty question", ask="", error="^Ask a question"),
    Case("a question of whitespace", ask=" \n\t \r\n", error="^Ask a question"),
    Case("a question of invisible characters", ask="\u200b\u200c\u200d\ufeff\u2060\u202e", error="^Ask a question"),
    Case("a question made only of mentions", ask="<@123456789012345678> <@&987654321098765432> <#555> @everyone @here",
         found=False),
    Case("a question made only of markdown", ask="**__~~||```\n```||~~__** > # - [](<>) `", found=False),
    Case("zero-width characters inside the words of a question", found=True,
         ask="Why did NA\u200bTO sus\u200dpend its training in Ir\u2060aq?"),
    Case("a right-to-left override in a question", found=True,
         ask="\u202eWhy did NATO suspend training in Iraq?\u202c"),
    Case("FTS5 query syntax", ask='" OR NEAR( * AND ^ - : col:x "', found=False),
    Case("NUL and terminal escapes in a question", ask="\x00\x01 NATO \x1b[31m training Iraq\x07", found=True),
    Case("SQL in a question", ask="'; DROP TABLE articles; --", found=False),
    Case("one word of 10,000 letters", ask="a" * 10_000, found=False),
    Case("emoji only", ask="🔥" * 50, found=False),
]


def assert_reasons(report: dict, pattern: str) -> None:
    assert [f["reason"] for f in report["failed"]] and all(re.search(pattern, f["reason"]) for f in report["failed"]), \
        report["failed"]


# -- the test ---------------------------------------------------------------------------------


def clear(reason: str) -> bool:
    """One line a person can read: not a traceback, not the loader's catch-all for a reader's bug."""
    return bool(reason.strip()) and "\n" not in reason and len(reason) < 300 and "Traceback" not in reason \
        and not reason.startswith("could not read (")


def snapshot(service: NewsService) -> tuple:
    """Everything a failing case must leave as it was: each article with its chunks and vectors, and the files."""
    articles = [(r.article, r.collections, r.chunks, r.embed_keys, r.vectors.tolist())
                for r in service.store.export_articles()]
    stats = {k: v for k, v in service.stats().items() if k != "disk_bytes"}  # the WAL's size may move
    return stats, articles, sorted(p.name for p in service.store.dir.iterdir())


def ingest(env: Env, case: Case, sources: list[str]) -> dict:
    if not case.memory:
        return env.service.ingest(sources, untrusted=case.untrusted).to_json()
    probe = subprocess.run(
        [sys.executable, str(PROBE), str(env.service.config.data_dir), str(FETCH_TIMEOUT), *sources],
        capture_output=True, text=True, timeout=CASE_BUDGET,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.splitlines()[-1])
    print(f"{case.name}: peak memory growth {report['peak_growth_mb']} MB")
    assert report["peak_growth_mb"] < MEMORY_BUDGET_MB, report["peak_growth_mb"]
    return report


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """A data folder holding the sample article, built once and copied for each case."""
    folder = tmp_path_factory.mktemp("baseline")
    config = Config(base_dir=folder)
    config.index.dir = str(folder / "data")
    assert len(NewsService(config, embedder=FakeEmbedder()).ingest([str(SEED)]).added) == 1
    return folder / "data"


@pytest.fixture
def env(baseline, config, fake_embedder, http_server, tmp_path, request):  # noqa: F811
    case: Case = request.param
    shutil.copytree(baseline, config.data_dir)
    config.fetch.timeout_seconds = FETCH_TIMEOUT
    config.fetch.fetch_linked_pages = case.linked_pages
    service = NewsService(config, embedder=fake_embedder)
    assert service.stats()["articles"] == 1
    folder = tmp_path / "inputs"
    folder.mkdir()
    return Env(folder, http_server, service)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("env", CASES, ids=[case.name for case in CASES], indirect=True)
def test_hostile_input(env: Env, request):
    case: Case = request.node.callspec.params["env"]
    service = env.service
    before = snapshot(service)
    started = time.monotonic()
    if case.ask is not None:
        if case.error:
            with pytest.raises(ValueError, match=case.error) as raised:
                service.ask(case.ask)
            assert clear(str(raised.value))
        else:
            answer = service.ask(case.ask)
            assert isinstance(answer, Answer) and answer.text.strip()
            assert not UNWANTED.search(answer.text)
            if case.found is not None:
                assert answer.found is case.found, answer.text
            assert all(service.article(c.article_id) for c in answer.citations)
        assert snapshot(service) == before  # a question never writes
    else:
        report = ingest(env, case, case.ingest(env))
        reasons = [f["reason"] for f in report["failed"]]
        assert all(clear(reason) for reason in reasons), reasons
        if case.error:
            assert report["added"] == 0 and reasons, report
            assert re.search(case.error, reasons[0]), reasons
            assert snapshot(service) == before
        else:
            assert report["added"] >= 1, reasons
            if case.added is not None:
                assert report["added"] == case.added, report
            stored = check_index(service.store.dir, chunker=service.ingestor.chunker, model_name=service.embedder.name,
                                 dim=service.embedder.dim)
            assert set(report["added_ids"]) | {a[0].id for a in before[1]} == set(stored)  # nothing lost
    if case.check:
        case.check(env, report if case.ask is None else {})
    assert time.monotonic() - started < CASE_BUDGET


# -- the limits are settings ----------------------------------------------------------------------


@pytest.mark.parametrize(("body", "message"), [
    ("timeout_seconds = 0", "fetch.timeout_seconds: must be positive"),
    ("max_page_bytes = 0", "fetch.max_page_bytes: must be at least 1"),
    ("max_feed_items = -5", "fetch.max_feed_items: must be at least 1"),
    ("max_redirects = -1", "fetch.max_redirects: must not be negative"),
])
def test_a_limit_that_bounds_nothing_is_refused_on_load(tmp_path, body, message):
    path = tmp_path / "config.toml"
    path.write_text(f"[fetch]\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_configured_limits_reach_fetches_feeds_and_files(tmp_path, http_server, fake_embedder):  # noqa: F811
    path = tmp_path / "config.toml"
    path.write_text('[index]\ndir = "data"\n[fetch]\nmax_page_bytes = 2000\nmax_feed_items = 3\nmax_redirects = 1\n'
                    "timeout_seconds = 0.5\nfetch_linked_pages = false\n")
    service = NewsService(load_config(path), embedder=fake_embedder)
    http_server.add("/page", story_html() * 8)
    http_server.add("/feed", feed_of(10), content_type="application/rss+xml")
    http_server.add_redirect("/r1", "/r2")
    http_server.add_redirect("/r2", "/feed")
    http_server.add_never_answer("/silent")
    big_file = tmp_path / "page.html"
    big_file.write_text(story_html() * 8)
    report = service.ingest([http_server.url(p) for p in ("/page", "/feed", "/r1", "/silent")] + [str(big_file)])
    assert len(report.added) == 3  # the feed's first three items
    assert [f.reason for f in report.failed] == ["page larger than 2 kB", "too many redirects", "timed out after 0.5 s",
                                                 "file larger than 2 kB"]
