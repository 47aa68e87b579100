"""URL canonicalisation, so the same story reached by two links gets one id; redaction for display."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_plus, urlencode, urljoin, urlsplit, urlunsplit

# Query parameters that only track the reader; they never change which story a URL names.
_TRACKING_PREFIXES = ("utm_", "mc_", "fbclid", "gclid", "ocid", "cmpid", "ncid", "ito", "at_")
# Query parameters whose values are credentials (compared lower-cased).
_SECRET_PARAMS = frozenset(
    {"token", "access_token", "auth", "auth_token", "key", "apikey", "api_key", "api-key", "password", "secret"}
)
_REDACTED = "redacted"  # a word, not "***": in Discord, asterisks are markdown
_HTTP = re.compile(r"(?i)^https?://")


def is_http_url(text: str) -> bool:
    """Whether `text` starts as an absolute http(s) URL."""
    return bool(_HTTP.match(text))


def absolute_http_url(link: str | None, base: str | None = None) -> str | None:
    """`link` as an absolute http(s) URL, resolved against `base` when relative; None otherwise."""
    link = (link or "").strip()
    if not link:
        return None
    if not is_http_url(link) and base:
        link = urljoin(base, link)
    return link if is_http_url(link) else None


def canonical_url(url: str) -> str | None:
    """Lower-cased scheme and host, no fragment, no tracking parameters, no trailing slash.

    Returns None for anything that is not an absolute http(s) URL.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if host.startswith("www."):
        host = host[4:]
    netloc = host if parts.port in (None, 80, 443) else f"{host}:{parts.port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith(_TRACKING_PREFIXES)
    ]
    path = parts.path.rstrip("/") or "/"
    return urlunsplit(("https", netloc, path, urlencode(sorted(query)), ""))


def outlet_from_url(url: str | None) -> str | None:
    """A readable outlet name from a URL's host: 'www.bbc.co.uk' -> 'bbc.co.uk'."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    return host[4:] if host.startswith("www.") else host


def redact_url(url: str) -> str:
    """The URL as it may be shown or logged: userinfo (`user:pass@`) and the values of credential
    query parameters (`token=`, `key=`, `apikey=`, `access_token=`...) replaced by "redacted".

    Private feeds carry their subscriber's credentials in the URL; the bot still fetches the URL as
    given, but a status page or a log line must not hand them on. Works on text, not a parse, so
    a URL that does not parse is redacted all the same; anything without `://` is returned as is.
    """
    return _without_credentials(url, _REDACTED)


def public_url(url: str) -> str:
    """The URL as a link for every reader: userinfo and credential query parameters left out.

    A story read through a private URL is linked in citations that the whole channel sees; a link
    with "redacted" in it would not open, one without the subscriber's key opens for anyone with theirs.
    """
    return _without_credentials(url, None)


def _without_credentials(url: str, replacement: str | None) -> str:
    """Credentials replaced by `replacement`, or left out when it is None."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority, rest = rest[:end], rest[end:]
    if "@" in authority:
        host = authority.rpartition("@")[2]
        authority = host if replacement is None else f"{replacement}@{host}"
    rest, hash_, fragment = rest.partition("#")
    path, mark, query = rest.partition("?")
    kept = []
    for part in query.split("&") if mark else ():
        name, equals, value = part.partition("=")
        if equals and value and unquote_plus(name).strip().lower() in _SECRET_PARAMS:
            if replacement is None:
                continue
            part = f"{name}={replacement}"
        kept.append(part)
    mark = mark if kept or replacement is not None else ""
    return f"{scheme}{sep}{authority}{path}{mark}{'&'.join(kept)}{hash_}{fragment}"


MAX_FEED_URL_CHARS = 2000


def check_feed_url(url: str) -> str:
    """The URL stripped, or ValueError saying why it cannot be a feed."""
    url = url.strip()
    if len(url) > MAX_FEED_URL_CHARS:
        raise ValueError("That URL is too long.")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("That is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("A feed URL must start with http:// or https://.")
    return url
