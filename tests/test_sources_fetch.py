"""Fetcher against a real local HTTP server: redirects, limits, deadlines and the SSRF guard."""

from __future__ import annotations

import base64
import gzip
import socket

import pytest
from http_fixture import LocalHTTPServer, http_server  # noqa: F401 - the fixture

from index.sources.fetch import Fetcher, FetchError, FetchLimits

LOOPBACK_REFUSALS = {"refused: private address 127.0.0.1", "refused: private address ::1"}


def fetch_error(fetcher: Fetcher, url: str) -> str:
    with pytest.raises(FetchError) as caught:
        fetcher.run(url)
    return caught.value.reason


def test_fetches_a_page_with_its_type_and_charset(http_server: LocalHTTPServer) -> None:
    http_server.add("/story", "<p>Café</p>", content_type="text/html; charset=UTF-8")
    page = Fetcher().run(http_server.url("/story"))
    assert page.status == 200
    assert page.body == "<p>Café</p>".encode()
    assert page.content_type == "text/html"
    assert page.charset == "utf-8"
    assert page.final_url == page.url == http_server.url("/story")


def test_sends_the_configured_user_agent(http_server: LocalHTTPServer) -> None:
    http_server.add("/ua", "ok")
    Fetcher(FetchLimits(user_agent="newsdesk-test/1")).run(http_server.url("/ua"))
    assert http_server.request_headers[0]["User-Agent"] == "newsdesk-test/1"


def test_userinfo_in_the_url_logs_in_with_basic_auth_and_stays_on_its_host(http_server: LocalHTTPServer) -> None:
    with LocalHTTPServer() as elsewhere:
        elsewhere.add("/feed", "moved here")
        http_server.add_redirect("/private", "/private2")  # same host: still logged in
        http_server.add_redirect("/private2", elsewhere.url("/feed"))  # another host: not
        url = http_server.url("/private").replace("://", "://reader:p%40ss%3Aword@")

        page = Fetcher().run(url)

        assert page.body == b"moved here"
        login = "Basic " + base64.b64encode(b"reader:p@ss:word").decode()
        assert [h.get("Authorization") for h in http_server.request_headers] == [login, login]
        assert "Authorization" not in elsewhere.request_headers[0]


def test_follows_redirects_and_reports_the_final_url(http_server: LocalHTTPServer) -> None:
    http_server.add("/final", "here")
    http_server.add_redirect("/one", "/two", status=301)
    http_server.add_redirect("/two", http_server.url("/final"), status=307)
    page = Fetcher().run(http_server.url("/one"))
    assert page.body == b"here"
    assert page.final_url == http_server.url("/final")
    assert http_server.requests == ["/one", "/two", "/final"]


def test_redirect_loop(http_server: LocalHTTPServer) -> None:
    http_server.add_redirect("/a", "/b")
    http_server.add_redirect("/b", "/a")
    assert fetch_error(Fetcher(), http_server.url("/a")) == "redirect loop"


def test_too_many_redirects(http_server: LocalHTTPServer) -> None:
    for n in range(10):
        http_server.add_redirect(f"/r{n}", f"/r{n + 1}")
    assert fetch_error(Fetcher(FetchLimits(max_redirects=3)), http_server.url("/r0")) == "too many redirects"
    assert len(http_server.requests) == 4  # the first request and three redirects, then it stops


def test_http_errors(http_server: LocalHTTPServer) -> None:
    http_server.add_status("/gone", 410)
    assert fetch_error(Fetcher(), http_server.url("/missing")) == "HTTP 404"
    assert fetch_error(Fetcher(), http_server.url("/gone")) == "HTTP 410"


@pytest.mark.parametrize("send_length", [True, False])
def test_a_50_mb_page_is_cut_off_at_max_bytes(http_server: LocalHTTPServer, send_length: bool) -> None:
    http_server.add_generated("/huge", 50_000_000, send_length=send_length)
    assert fetch_error(Fetcher(), http_server.url("/huge")) == "page larger than 5 MB"


def test_a_page_just_under_the_limit_is_read(http_server: LocalHTTPServer) -> None:
    http_server.add_generated("/fits", 100_000, send_length=False)
    assert len(Fetcher(FetchLimits(max_bytes=100_000)).run(http_server.url("/fits")).body) == 100_000


def test_gzip_is_decoded_and_a_gzip_bomb_is_cut_off(http_server: LocalHTTPServer) -> None:
    http_server.add("/gz", gzip.compress(b"story " * 1000), headers={"Content-Encoding": "gzip"})
    http_server.add("/bomb", gzip.compress(b"\0" * 20_000_000), headers={"Content-Encoding": "gzip"})
    assert Fetcher().run(http_server.url("/gz")).body == b"story " * 1000
    assert fetch_error(Fetcher(FetchLimits(max_bytes=1_000_000)), http_server.url("/bomb")) == "page larger than 1 MB"


def test_a_server_that_never_answers_times_out(http_server: LocalHTTPServer) -> None:
    http_server.add_never_answer("/silent")
    assert fetch_error(Fetcher(FetchLimits(timeout_seconds=1)), http_server.url("/silent")) == "timed out after 1 s"


def test_a_trickling_server_cannot_hold_the_fetch_past_the_deadline(http_server: LocalHTTPServer) -> None:
    # It sends a few bytes every 50 ms for ever, so no single read ever times out.
    http_server.add_trickle("/drip", interval=0.05)
    assert fetch_error(Fetcher(FetchLimits(timeout_seconds=1)), http_server.url("/drip")) == "timed out after 1 s"


def test_connection_refused() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert fetch_error(Fetcher(FetchLimits(timeout_seconds=2)), f"http://127.0.0.1:{port}/") == "connection refused"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/feed", "file:///etc/passwd", "javascript:alert(1)", "example.com/news"]
)
def test_only_http_and_https(url: str) -> None:
    assert fetch_error(Fetcher(), url) == "not http(s)"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://10.0.0.1/", "10.0.0.1"),
        ("http://192.168.1.20:8080/admin", "192.168.1.20"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),  # cloud metadata
        ("http://[::1]/", "::1"),
        ("http://[::ffff:10.0.0.1]/", "10.0.0.1"),
        ("http://0.0.0.0/", "0.0.0.0"),
        ("http://224.0.0.1/", "224.0.0.1"),
        ("http://100.64.0.1/", "100.64.0.1"),  # carrier-grade NAT
    ],
)
def test_private_addresses_are_refused_before_connecting(url: str, address: str) -> None:
    fetcher = Fetcher(FetchLimits(refuse_private=True, timeout_seconds=2))
    assert fetch_error(fetcher, url) == f"refused: private address {address}"


def test_names_are_resolved_and_checked() -> None:
    fetcher = Fetcher(FetchLimits(refuse_private=True, timeout_seconds=2))
    assert fetch_error(fetcher, "http://localhost/") in LOOPBACK_REFUSALS


def test_allowed_hosts_may_be_private_but_redirects_are_checked_again(http_server: LocalHTTPServer) -> None:
    http_server.add("/ok", "fine")
    http_server.add_redirect("/sneaky", f"http://localhost:{http_server.port}/ok")
    fetcher = Fetcher(FetchLimits(refuse_private=True, allow_hosts=("127.0.0.1",)))
    assert fetcher.run(http_server.url("/ok")).body == b"fine"
    assert fetch_error(fetcher, http_server.url("/sneaky")) in LOOPBACK_REFUSALS
    assert http_server.requests == ["/ok", "/sneaky"]  # the refused hop was never requested


def test_refusal_applies_to_redirect_targets(http_server: LocalHTTPServer) -> None:
    http_server.add_redirect("/to-metadata", "http://169.254.169.254/latest/")
    fetcher = Fetcher(FetchLimits(refuse_private=True, allow_hosts=("127.0.0.1",)))
    assert fetch_error(fetcher, http_server.url("/to-metadata")) == "refused: private address 169.254.169.254"


def test_redirect_to_another_scheme_is_refused(http_server: LocalHTTPServer) -> None:
    http_server.add_redirect("/ftp", "ftp://example.com/file")
    assert fetch_error(Fetcher(), http_server.url("/ftp")) == "not http(s)"


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout_seconds": 0}, {"max_bytes": 0}, {"max_redirects": -1}, {"user_agent": " "}],
)
def test_limits_are_validated(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FetchLimits(**kwargs)


def test_allow_hosts_are_normalized() -> None:
    assert FetchLimits(allow_hosts=["News.Local.", " "]).allow_hosts == ("news.local",)
