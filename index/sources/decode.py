"""Bytes to text: byte-order mark, then the declared charset if it holds up, else detection.

Declarations are often wrong (a page served as ISO-8859-1 that is really UTF-8, a feed that says
UTF-8 and is Windows-1252), so a declaration is only believed when the bytes agree with it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import charset_normalizer

from index.sources.common import SourceError

# Magic numbers of the binary files people most often hand a news reader by mistake.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF-", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "RAR"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "MS Office"),
    (b"\x7fELF", "ELF"),
    (b"MZ", "Windows executable"),
    (b"ID3", "MP3"),
    (b"OggS", "Ogg"),
    (b"fLaC", "FLAC"),
    (b"\x1aE\xdf\xa3", "WebM"),
    (b"wOFF", "WOFF"),
    (b"wOF2", "WOFF2"),
    (b"SQLite format 3\x00", "SQLite"),
)

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9_.:-]+)["']""")
_HIGH_RUN = re.compile(rb"[\x80-\xff]+")
_META_CHARSET = re.compile(rb"""<meta[^>]+?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)

# Labels browsers read as a superset (WHATWG Encoding Standard), so bytes outside the nominal
# charset still decode as their authors' software wrote them.
_SUPERSETS = {
    "iso8859-1": ("cp1252", "latin-1"),
    "ascii": ("cp1252", "latin-1"),
    "iso8859-9": ("cp1254", "iso8859-9"),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "shift_jis": ("cp932", "shift_jis"),
    "euc_kr": ("cp949", "euc_kr"),
    "big5": ("big5hkscs", "big5"),
}
# Declarations that are never believed: UTF-16/32 can only be announced by a BOM once the
# declaration itself was readable as ASCII, and UTF-7 is a known cross-site scripting vector.
_DISTRUSTED = {"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-7"}


def sniff_binary(head: bytes) -> str | None:
    """'binary file (looks like PNG)'-style reason when the first bytes are not text, else None."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"binary file (looks like {kind})"
    if head[4:8] == b"ftyp":
        return "binary file (looks like MP4 video)"
    if head.startswith(b"RIFF") and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        return f"binary file (looks like {head[8:12].decode().strip()})"
    if any(head.startswith(bom) for bom, _ in _BOMS):
        return None  # UTF-16/32 text is full of NUL bytes
    if b"\x00" in head[:8192]:
        return "binary file (contains NUL bytes)"
    return None


def refuse_binary(head: bytes) -> None:
    """Raise SourceError with sniff_binary's reason when the first bytes are not text."""
    reason = sniff_binary(head)
    if reason:
        raise SourceError(reason)


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str  # the Python codec that was used, e.g. "utf-8", "cp1252"


class TextDecoder:
    """Bytes -> str: BOM, then the declared charsets the bytes agree with, then detection.

    `declared` is the charset from an HTTP header; XML declarations and HTML <meta> tags within the
    first `sniff_bytes` are read as well. Raises SourceError for binary content.
    """

    def __init__(self, *, sniff_bytes: int = 32_768) -> None:
        if sniff_bytes < 1024:
            raise ValueError("sniff_bytes must be at least 1024")
        self._sniff_bytes = sniff_bytes

    def run(self, data: bytes, declared: str | None = None) -> DecodedText:
        refuse_binary(data[:8192])
        for bom, encoding in _BOMS:
            if data.startswith(bom):
                return DecodedText(data[len(bom) :].decode(encoding, errors="replace"), encoding)
        if data.isascii():
            return DecodedText(data.decode("ascii"), "ascii")
        # Valid UTF-8 with non-ASCII bytes almost never happens by chance in a legacy encoding,
        # so it beats any declaration: this is what repairs a page mislabelled as ISO-8859-1.
        try:
            return DecodedText(data.decode("utf-8"), "utf-8")
        except UnicodeDecodeError:
            pass
        for encoding in self._declared(data, declared):
            try:
                return DecodedText(data.decode(encoding), encoding)
            except UnicodeDecodeError:
                continue
        return self._detect(data)

    def _declared(self, data: bytes, declared: str | None) -> list[str]:
        head = data[: self._sniff_bytes]
        labels = [declared]
        for pattern in (_XML_ENCODING, _META_CHARSET):
            match = pattern.search(head)
            labels.append(match.group(1).decode("ascii") if match else None)
        encodings: list[str] = []
        for label in labels:
            name = _codec_name(label)
            if name is None or name in _DISTRUSTED or name == "utf-8":
                continue  # UTF-8 was tried already
            for candidate in _SUPERSETS.get(name, (name,)):
                if candidate not in encodings:
                    encodings.append(candidate)
        return encodings

    def _detect(self, data: bytes) -> DecodedText:
        # Western text has accented letters scattered among ASCII ones; charset-normalizer is poor
        # at telling Windows-1252 from its neighbours on such text, so that case is decided here.
        if _scattered_non_ascii(data[: self._sniff_bytes * 4]):
            try:
                return DecodedText(data.decode("cp1252"), "cp1252")
            except UnicodeDecodeError:
                return DecodedText(data.decode("latin-1"), "latin-1")
        best = charset_normalizer.from_bytes(data).best()
        if best is not None and best.encoding:
            return DecodedText(data.decode(best.encoding, errors="replace"), best.encoding)
        return DecodedText(data.decode("utf-8", errors="replace"), "utf-8")


def _codec_name(label: str | None) -> str | None:
    if not label:
        return None
    try:
        return codecs.lookup(label.strip().strip("\"'")).name
    except LookupError:
        return None


def _scattered_non_ascii(data: bytes) -> bool:
    """True when non-ASCII bytes come alone or in pairs between ASCII ones, as accents do in Latin
    scripts ("déjà", "ações"); multi-byte encodings (CJK) and alphabets outside ASCII (Cyrillic,
    Greek) give whole words of them.
    """
    runs = [len(run) for run in _HIGH_RUN.findall(data)]
    total = sum(runs)
    return total > 0 and sum(n for n in runs if n <= 2) >= 0.8 * total
