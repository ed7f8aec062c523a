"""Files -> structured text: plain text, Markdown, HTML and PDF (text layer) become `Block`s.

A `Block` is a heading, a paragraph or a code block, with its page (PDF) and its character
offsets in the document's extracted text, so a chunk can be cited precisely. Hostile input is
handled here: archives (zip, gzip, ...) are refused by their magic bytes, extracted text is capped
(a small PDF cannot expand into gigabytes), zero-width and bidi control characters are removed,
and text that a reader cannot see is dropped: in HTML `display:none`, `hidden`, `aria-hidden`, tiny
fonts; in PDF invisible render modes, white fill, glyphs under 1 pt and text off the page box
(`pdf_hidden.py`). Each such event is reported as a finding.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePath

from jongleur.rag.pdf_hidden import HiddenTextFilter


class DocumentError(ValueError):
    """The file cannot be ingested (unsupported, too large, malformed). `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_document") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Block:
    kind: str  # "heading" | "paragraph" | "code"
    text: str
    level: int = 0  # heading depth (1..6)
    page: int | None = None
    start: int = 0  # offsets in ParsedDocument.text
    end: int = 0


@dataclass
class ParsedDocument:
    media_type: str
    text: str
    blocks: list[Block]
    pages: int | None = None
    findings: list[str] = field(default_factory=list)


MEDIA_TYPES = {
    ".txt": "text/plain", ".text": "text/plain", ".log": "text/plain", ".csv": "text/plain",
    ".md": "text/markdown", ".markdown": "text/markdown",
    ".html": "text/html", ".htm": "text/html",
    ".pdf": "application/pdf",
}
ARCHIVE_MAGIC = [(b"PK\x03\x04", "zip"), (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ", "xz"),
                 (b"7z\xbc\xaf", "7z"), (b"Rar!", "rar"), (b"\x28\xb5\x2f\xfd", "zstd")]
# zero-width, bidi controls and other invisible format characters (category Cf), but keep soft hyphen out
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def media_type_for(filename: str, declared: str | None, head: bytes) -> str:
    for magic, kind in ARCHIVE_MAGIC:
        if head.startswith(magic):
            raise DocumentError(f"{kind} archives are not accepted; upload the files themselves", 415,
                                "unsupported_media_type")
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    suffix = PurePath(filename).suffix.lower()
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    base = (declared or "").split(";")[0].strip().lower()
    if base in set(MEDIA_TYPES.values()):
        return base
    if base in ("", "application/octet-stream") and suffix == "":
        return "text/plain"
    raise DocumentError(f"unsupported file type {suffix or base!r}; accepted: txt, md, html, pdf", 415,
                        "unsupported_media_type")


def clean_text(text: str, findings: list[str]) -> str:
    text = unicodedata.normalize("NFC", text)
    cleaned = _INVISIBLE.sub("", text)
    if cleaned != text:
        findings.append("invisible_characters_removed")
    cleaned2 = _CONTROL.sub("", cleaned)
    if cleaned2 != cleaned:
        findings.append("control_characters_removed")
    return cleaned2.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DocumentError("the file looks binary, not text", 415, "unsupported_media_type")
    for encoding in ("utf-8-sig", "utf-16") if data.startswith((b"\xff\xfe", b"\xfe\xff")) else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


class _Builder:
    """Accumulates blocks and the document text with offsets."""

    def __init__(self, max_chars: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.blocks: list[Block] = []
        self.max_chars = max_chars

    def add(self, kind: str, text: str, level: int = 0, page: int | None = None) -> None:
        text = text.strip("\n") if kind == "code" else text.strip()
        if not text:
            return
        if self.size:
            self.parts.append("\n\n")
            self.size += 2
        start = self.size
        self.parts.append(text)
        self.size += len(text)
        if self.size > self.max_chars:
            raise DocumentError(f"the document's text is longer than {self.max_chars} characters", 413,
                                "document_too_large")
        self.blocks.append(Block(kind, text, level, page, start, self.size))

    def text(self) -> str:
        return "".join(self.parts)


def _paragraphs(text: str, b: _Builder, page: int | None = None) -> None:
    for para in re.split(r"\n\s*\n", text):
        b.add("paragraph", para, page=page)


def parse_plain(text: str, b: _Builder) -> None:
    _paragraphs(text, b)


def parse_markdown(text: str, b: _Builder) -> None:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    lines = text.split("\n")
    tokens = md.parse(text)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            b.add("heading", tokens[i + 1].content, level=int(tok.tag[1]))
            i += 3
            continue
        if tok.type in ("fence", "code_block"):
            b.add("code", tok.content)
        elif tok.type in ("paragraph_open", "table_open", "html_block") and tok.map:
            if tok.type == "html_block":
                b.add("paragraph", tok.content)
            else:
                b.add("paragraph", "\n".join(lines[tok.map[0]:tok.map[1]]))
                close = tok.type.replace("_open", "_close")
                depth = 1
                while depth and i + 1 < len(tokens):
                    i += 1
                    if tokens[i].type == tok.type:
                        depth += 1
                    elif tokens[i].type == close:
                        depth -= 1
        i += 1


_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d]*[1-9])"
                           r"|opacity\s*:\s*0(?![.\d]*[1-9])", re.IGNORECASE)
_BLOCK_TAGS = {"p", "li", "td", "th", "div", "section", "article", "blockquote", "dd", "dt", "caption", "tr"}
_SKIP_TAGS = {"script", "style", "noscript", "template", "head", "title", "svg", "iframe", "object"}
_VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


class _HTMLExtractor(HTMLParser):
    def __init__(self, b: _Builder, findings: list[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.b = b
        self.findings = findings
        self.stack: list[tuple[str, bool]] = []  # (tag, hidden-or-skipped)
        self.buf: list[str] = []
        self.kind = "paragraph"
        self.level = 0

    def _hidden(self) -> bool:
        return any(h for _, h in self.stack)

    def _flush(self) -> None:
        text = "".join(self.buf)
        self.buf = []
        if self.kind != "code":
            text = re.sub(r"[ \t\n]+", " ", text)
        self.b.add(self.kind, text, level=self.level)
        self.kind, self.level = "paragraph", 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag == "br":
                self.buf.append("\n")
            return
        a = {k.lower(): (v or "") for k, v in attrs}
        hidden = tag in _SKIP_TAGS
        if not hidden and ("hidden" in a or a.get("aria-hidden", "").lower() == "true"
                           or _HIDDEN_STYLE.search(a.get("style", ""))):
            hidden = True
            if "hidden_text_removed" not in self.findings:
                self.findings.append("hidden_text_removed")
        if not self._hidden():
            if re.fullmatch(r"h[1-6]", tag) or tag == "pre" or tag in _BLOCK_TAGS:
                self._flush()
            if re.fullmatch(r"h[1-6]", tag):
                self.kind, self.level = "heading", int(tag[1])
            elif tag == "pre":
                self.kind = "code"
        self.stack.append((tag, hidden))

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break
        if not self._hidden() and (re.fullmatch(r"h[1-6]", tag) or tag == "pre" or tag in _BLOCK_TAGS):
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._hidden():
            self.buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def parse_html(text: str, b: _Builder, findings: list[str]) -> None:
    parser = _HTMLExtractor(b, findings)
    parser.feed(text)
    parser.close()


def parse_pdf(data: bytes, b: _Builder, max_pages: int, findings: list[str]) -> int:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:  # pragma: no cover
        raise DocumentError("PDF support needs pypdf", 415, "unsupported_media_type") from exc
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentError("encrypted PDFs are not accepted", 415, "unsupported_media_type")
        pages = len(reader.pages)
        if pages > max_pages:
            raise DocumentError(f"the PDF has {pages} pages; at most {max_pages} are accepted", 413,
                                "document_too_large")
        for number, page in enumerate(reader.pages, start=1):
            hidden = HiddenTextFilter(page.mediabox)
            _paragraphs(page.extract_text(visitor_operand_before=hidden.visit) or "", b, page=number)
            if hidden.dropped:
                findings += ["hidden_text_removed", *(f"pdf_{reason}" for reason in hidden.dropped)]
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError) as exc:
        raise DocumentError(f"the PDF could not be read ({type(exc).__name__})") from None
    return pages


def parse_document(filename: str, data: bytes, declared_type: str | None = None, *,
                   max_chars: int = 2_000_000, max_pages: int = 2000) -> ParsedDocument:
    """Bytes of one uploaded file -> `ParsedDocument` (raises `DocumentError`)."""
    if not data:
        raise DocumentError("the file is empty")
    media = media_type_for(filename, declared_type, data[:16])
    findings: list[str] = []
    b = _Builder(max_chars)
    pages = None
    if media == "application/pdf":
        pages = parse_pdf(data, b, max_pages, findings)
        for block in b.blocks:
            block.text = clean_text(block.text, findings)
        if not b.blocks:
            raise DocumentError("the PDF has no text layer (scanned images are not supported)")
        text = "\n\n".join(bl.text for bl in b.blocks)
        pos = 0
        for bl in b.blocks:
            bl.start, bl.end = pos, pos + len(bl.text)
            pos = bl.end + 2
        return ParsedDocument(media, text, b.blocks, pages, sorted(set(findings)))
    raw = clean_text(_decode(data), findings)
    if len(raw) > max_chars * 4:
        raise DocumentError(f"the document's text is longer than {max_chars} characters", 413, "document_too_large")
    if media == "text/markdown":
        parse_markdown(raw, b)
    elif media == "text/html":
        parse_html(raw, b, findings)
    else:
        parse_plain(raw, b)
    if not b.blocks:
        raise DocumentError("the document has no text")
    return ParsedDocument(media, b.text(), b.blocks, pages, sorted(set(findings)))
