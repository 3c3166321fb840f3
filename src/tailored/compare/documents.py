"""Documents for retrieval: read a folder of .txt/.md/.html (and .pdf with pypdf) and cut it into chunks.

Chunks follow paragraphs (blank lines) and are packed up to ``chunk_chars`` characters; a paragraph
longer than that is cut at sentence ends (or hard, as a last resort). Every chunk keeps its source
file and position, so each RAG answer can name where its context came from.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path

from tailored.errors import DataError

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
CHUNK_CHARS = 600


@dataclass
class Chunk:
    source: str  # path relative to the documents folder
    index: int  # position of the chunk in its file
    text: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Text(HTMLParser):
    SKIP = {"script", "style", "head", "nav"}
    BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def pdf_available() -> bool:
    try:
        import pypdf  # noqa: F401
    except ImportError:
        return False
    return True


def document_files(folder: str | Path) -> list[Path]:
    """The readable documents under ``folder``, sorted (hidden files and folders skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--docs {folder}: not a folder", hint="pass a folder of .txt, .md, .html or .pdf files")
    suffixes = TEXT_SUFFIXES + HTML_SUFFIXES + (PDF_SUFFIXES if pdf_available() else ())
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        pdf = "" if pdf_available() else " (PDF needs `pip install pypdf`)"
        raise DataError(f"--docs {folder}: no .txt, .md, .html or .pdf file in it{pdf}", hint="put the documents to retrieve from there")
    return files


def read_document(path: Path) -> str:
    """The plain text of one document."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        import pypdf

        try:
            return "\n\n".join(page.extract_text() or "" for page in pypdf.PdfReader(str(path)).pages)
        except Exception as exc:  # pypdf raises many kinds on a damaged file
            raise DataError(f"{path}: not a readable PDF ({type(exc).__name__}: {exc})", hint="re-export it or convert it to text") from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text", hint="re-save it as UTF-8") from None
    return html_text(text) if suffix in HTML_SUFFIXES else text


def split_text(text: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """Paragraph-packed chunks of at most ``chunk_chars`` characters (whitespace collapsed)."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = re.sub(r"\s+", " ", para).strip()
        while len(para) > chunk_chars:
            cut = max(para.rfind(". ", 0, chunk_chars), para.rfind("? ", 0, chunk_chars), para.rfind("! ", 0, chunk_chars))
            cut = cut + 1 if cut > chunk_chars // 3 else chunk_chars
            pieces.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            pieces.append(para)
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 1 + len(piece) <= chunk_chars:
            chunks[-1] += "\n" + piece
        else:
            chunks.append(piece)
    return chunks


def chunk_file(folder: Path, path: Path, chunk_chars: int = CHUNK_CHARS) -> list[Chunk]:
    rel = path.relative_to(folder).as_posix()
    return [Chunk(rel, i, t) for i, t in enumerate(split_text(read_document(path), chunk_chars))]
