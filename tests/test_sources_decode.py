"""TextDecoder: BOMs, declarations that hold or lie, detection, and binary input refused."""

from __future__ import annotations

import codecs

import pytest
from conftest import SHARED_DATA

from index.sources.common import SourceError
from index.sources.decode import TextDecoder, sniff_binary

FEEDS = SHARED_DATA / "feeds_and_html" / "rss"
needs_data = pytest.mark.skipif(not FEEDS.is_dir(), reason="shared data not available")

GERMAN = "Ab April soll es wieder Förderung für den Ausbau von Glasfaser geben. Größere Projekte zuerst."
PORTUGUESE = "Ações e notícias: a votação não começou ainda em São Paulo."
RUSSIAN = "Правительство России объявило о новых мерах поддержки экономики."
CHINESE = "中国政府宣布了新的经济刺激措施，以支持中小企业的发展。"
JAPANESE = "日本政府は新しい経済対策を発表しました。"


def decode(data: bytes, declared: str | None = None) -> str:
    return TextDecoder().run(data, declared=declared).text


def test_ascii_and_utf8() -> None:
    assert decode(b"plain news") == "plain news"
    assert decode("Café déjà vu".encode()) == "Café déjà vu"


@pytest.mark.parametrize(
    ("bom", "encoding"),
    [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")],
)
def test_a_byte_order_mark_wins(bom: bytes, encoding: str) -> None:
    assert decode(bom + GERMAN.encode(encoding), declared="iso-8859-1") == GERMAN


def test_a_correct_declaration_is_used() -> None:
    result = TextDecoder().run(RUSSIAN.encode("koi8-r"), declared="koi8-r")
    assert result.text == RUSSIAN
    assert result.encoding == "koi8-r"


def test_utf8_declared_as_latin1_is_still_read_as_utf8() -> None:
    assert decode(GERMAN.encode("utf-8"), declared="ISO-8859-1") == GERMAN


def test_latin1_declared_as_utf8_is_detected() -> None:
    assert decode(GERMAN.encode("cp1252"), declared="utf-8") == GERMAN
    assert decode(PORTUGUESE.encode("latin-1"), declared="utf-8") == PORTUGUESE


def test_an_unknown_or_distrusted_declaration_is_ignored() -> None:
    assert decode(GERMAN.encode("cp1252"), declared="no-such-charset") == GERMAN
    assert decode(GERMAN.encode("cp1252"), declared="utf-7") == GERMAN


def test_xml_declaration_and_html_meta_are_read() -> None:
    xml = f'<?xml version="1.0" encoding="windows-1251"?><rss><title>{RUSSIAN}</title></rss>'
    assert RUSSIAN in decode(xml.encode("cp1251"))
    page = f'<html><head><meta charset="gb2312"></head><body>{CHINESE}</body></html>'
    assert CHINESE in decode(page.encode("gb2312"))
    legacy = f'<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS"><p>{JAPANESE}</p>'
    assert JAPANESE in decode(legacy.encode("shift_jis"))


@pytest.mark.parametrize(("text", "encoding"), [(RUSSIAN, "cp1251"), (CHINESE, "gb18030"), (JAPANESE, "cp932")])
def test_undeclared_legacy_encodings_are_detected(text: str, encoding: str) -> None:
    assert decode(text.encode(encoding)) == text


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG"),
        (b"\xff\xd8\xff\xe0" + bytes(100), "JPEG"),
        (b"%PDF-1.7\n%\xe2\xe3", "PDF"),
        (b"GIF89a" + bytes(10), "GIF"),
        (b"PK\x03\x04" + bytes(10), "ZIP"),
    ],
)
def test_binary_files_are_refused_by_magic(data: bytes, kind: str) -> None:
    assert sniff_binary(data) == f"binary file (looks like {kind})"
    with pytest.raises(SourceError, match=rf"^binary file \(looks like {kind}\)$"):
        decode(data)


def test_nul_bytes_mean_binary_but_utf16_with_a_bom_is_text() -> None:
    with pytest.raises(SourceError, match="binary file"):
        decode(b"some text\x00\x00\x01\x02 more")
    assert sniff_binary(codecs.BOM_UTF16_LE + "news".encode("utf-16-le")) is None


@needs_data
def test_real_feeds_in_legacy_encodings() -> None:
    # uolNoticias.rss has no declaration and is Windows-1252; encoding.rss declares ISO-8859-1.
    uol = TextDecoder().run((FEEDS / "rss-parser/input/uolNoticias.rss").read_bytes())
    assert "Últimas Notícias" in uol.text
    assert uol.encoding == "cp1252"
    assert "\ufffd" not in decode((FEEDS / "rss-parser/input/encoding.rss").read_bytes())
    assert "Förderung" in decode((FEEDS / "feed-rs/xml/xml_iso8859.xml").read_bytes())
