"""HTML article pages (saved or fetched) -> Article, with trafilatura; and HTML fragments -> text.

trafilatura finds the article body and the metadata (title, site name, author, date). Its work grows
with the number of elements, and real news pages have a few thousand at most, so a page with far
more is refused instead of taking minutes.
"""

from __future__ import annotations

import html as html_entities
import re
import warnings
from datetime import datetime

import lxml.etree
import lxml.html
from trafilatura import bare_extraction
from trafilatura.utils import load_html

from index.article import Article
from index.sources.common import SourceError, build_article, one_line, parse_datetime
from index.urls import absolute_http_url, is_http_url, outlet_from_url


# htmldate hands dateutil names like "EST"; the warning says nothing a user of newsdesk can act on.
warnings.filterwarnings("ignore", message=r"tzname \w+ identified but not understood", module=r"dateutil\.")
_TITLE_SEPARATORS = " |-–—:·•"


class HtmlReader:
    """An HTML page -> Article. `url` is where it was fetched from (None for a saved file)."""

    def __init__(self, *, max_elements: int = 50_000, include_tables: bool = True) -> None:
        if max_elements < 100:
            raise ValueError("max_elements must be at least 100")
        self._max_elements = max_elements
        self._include_tables = include_tables

    def run(self, page: str, *, source: str, url: str | None = None) -> Article:
        tree = load_html(page) if page.strip() else None
        if tree is None and "<" in page:
            tree = load_html(f"<html><body>{page}</body></html>")  # a fragment, e.g. a saved article body
        if tree is None:
            raise SourceError("no article text found")
        elements = sum(1 for _ in tree.iter())
        if elements > self._max_elements:
            raise SourceError(f"page too large to extract ({elements} HTML elements)")
        language = _page_language(tree)
        canonical = _canonical(tree)
        document = bare_extraction(
            tree,  # trafilatura copies a tree before cleaning it
            url=url,
            with_metadata=True,
            include_comments=False,
            include_tables=self._include_tables,
            date_extraction_params={
                "original_date": True,
                "extensive_search": True,
                "outputformat": "%Y-%m-%dT%H:%M:%S%z",  # the time too, where the page gives one
                "max_date": datetime.now().strftime("%Y-%m-%d"),
            },
        )
        if document is None or not (document.text or "").strip():
            raise SourceError("no article text found")
        page_url = _same_site(absolute_http_url(canonical, url), url) or url or absolute_http_url(document.url)
        outlet = _site_name(document.sitename, page_url) or outlet_from_url(page_url)
        title = _strip_site(one_line(document.title), outlet or "")
        paragraphs = [line for line in document.text.split("\n") if line.strip()]
        if paragraphs and title and one_line(paragraphs[0]) == title:
            paragraphs = paragraphs[1:]  # the headline repeated at the top of the body
        return build_article(
            text="\n\n".join(paragraphs),
            source=source,
            title=title,
            url=page_url,
            outlet=outlet,
            published=parse_datetime(document.date),
            language=language,
            author=_authors(document.author),
        )


def html_to_text(markup: str) -> str:
    """Plain text of an HTML fragment (a feed item's content): block elements become paragraphs."""
    if "<" not in markup:
        return html_entities.unescape(markup)
    try:
        root = lxml.html.fragment_fromstring(markup, create_parent="div")
    except (lxml.etree.ParserError, ValueError):
        return html_entities.unescape(re.sub(r"<[^>]*>", " ", markup))
    lxml.etree.strip_elements(root, "script", "style", "noscript", "template", "iframe", "object", with_tail=False)
    for element in root.iter(lxml.etree.Element):
        if element.tag == "br":
            element.tail = "\n" + (element.tail or "")
        elif element.tag in _BLOCKS:
            element.text = "\n\n" + (element.text or "")
            element.tail = "\n\n" + (element.tail or "")
    return root.text_content()


_BLOCKS = frozenset(
    "p div li ul ol h1 h2 h3 h4 h5 h6 blockquote pre table tr section article header footer "
    "figure figcaption dl dt dd hr aside nav address details summary".split()
)


def _page_language(tree: lxml.html.HtmlElement) -> str | None:
    for value in (
        tree.get("lang"),
        tree.get("{http://www.w3.org/XML/1998/namespace}lang"),
        *tree.xpath("//meta[@property='og:locale']/@content"),
    ):
        if value and value.strip():
            return value.strip()
    return None


def _site_name(sitename: str | None, page_url: str | None) -> str | None:
    """The outlet's name as the page gives it; None where trafilatura only echoed the host name."""
    site = one_line(sitename)
    if is_http_url(site):
        return outlet_from_url(site)
    host = outlet_from_url(page_url)
    if not site or (host and site.lower().split(":", 1)[0].removeprefix("www.") == host):
        return None
    return site


def _canonical(tree: lxml.html.HtmlElement) -> str | None:
    """The page's own URL for itself: <link rel="canonical">, else og:url."""
    for link in tree.iter("link"):
        if "canonical" in (link.get("rel") or "").lower().split() and (link.get("href") or "").strip():
            return link.get("href").strip()
    for value in tree.xpath("//meta[@property='og:url']/@content"):
        if value.strip():
            return value.strip()
    return None


def _same_site(candidate: str | None, fetched: str | None) -> str | None:
    """The canonical URL unless it points to another site than the page came from: a page must not
    be able to pass itself off as another outlet's story (and take that story's id)."""
    if not candidate or not fetched:
        return candidate
    own, claimed = outlet_from_url(fetched) or "", outlet_from_url(candidate) or ""
    if own == claimed or own.endswith("." + claimed) or claimed.endswith("." + own):
        return candidate
    return None


def _strip_site(title: str, outlet: str) -> str:
    """'Story | The Guardian' -> 'Story' when the suffix is the outlet's name."""
    if outlet and title.lower().endswith(outlet.lower()):
        stripped = title[: -len(outlet)].rstrip()
        if stripped != title and stripped and stripped[-1] in _TITLE_SEPARATORS:
            return stripped.rstrip(_TITLE_SEPARATORS) or title
    return title


def _authors(value: str | None) -> str | None:
    """'Jane Doe; JANE DOE' -> 'Jane Doe'."""
    if not value:
        return None
    names: dict[str, str] = {}
    for name in value.split(";"):
        name = one_line(name)
        if name:
            names.setdefault(name.lower(), name)
    return "; ".join(names.values()) or None
