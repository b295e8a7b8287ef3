"""HTML mail bodies as plain text lines, with two-cell table rows read as "Key: Value"."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "footer",
        "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
        "p", "pre", "section", "table", "tbody", "tfoot", "thead", "ul",
    }
)  # fmt: skip
_HIDDEN_TAGS = frozenset({"script", "style", "template", "title"})
_CELL_TAGS = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_DECLARATION = re.compile(r"<!(?!--)")
_UNCLOSED_TAG = re.compile(r"<(?!!--)(?=[^<>]*(?:<|\Z))")
"""A "<" that no ">" closes before the next "<": not a tag, whatever follows it."""
_MARKED_SECTION = re.compile(r"<!\[(?!(?:if|endif)\b)", re.IGNORECASE)
"""`<![CDATA[` and the like: not HTML, and quadratic in old html.parser too; Outlook's
`<![if ...]>` and `<![endif]>` stay."""


class _TextExtractor(HTMLParser):
    """Collects visible text; block elements and table rows end lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._hidden_depth = 0
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            # Whatever the head left unclosed (a <title> without </title>) ends here.
            self._hidden_depth = 0
        elif tag in _HIDDEN_TAGS:
            self._hidden_depth += 1
        elif tag == "tr":
            self._end_row()
            self._row = []
        elif tag in _CELL_TAGS:
            self._end_cell()
            self._cell = []
        elif tag in _BLOCK_TAGS:
            self._end_line()
            if tag == "pre":
                self._pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden_depth = max(0, self._hidden_depth - 1)
        elif tag == "tr":
            self._end_row()
        elif tag in _CELL_TAGS:
            self._end_cell()
        elif tag == "table":
            self._end_row()
            self._end_line()
        elif tag in _BLOCK_TAGS:
            self._end_line()
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._hidden_depth:
            return
        if self._pre_depth and self._cell is None:
            # Preformatted text keeps its line breaks: a <pre> may hold one log line per line.
            first, *rest = data.split("\n")
            self._line.append(first)
            for line in rest:
                self._end_line()
                self._line.append(line)
            return
        (self._cell if self._cell is not None else self._line).append(data)

    def close(self) -> None:
        super().close()
        self._end_row()
        self._end_line()

    def _end_line(self) -> None:
        if self._cell is not None:
            # A line break inside a table cell separates words, not table rows.
            self._cell.append(" ")
            return
        text = _SPACES.sub(" ", "".join(self._line)).strip()
        if text:
            self.lines.append(text)
        self._line = []

    def _end_cell(self) -> None:
        if self._cell is None:
            return
        text = _SPACES.sub(" ", "".join(self._cell)).strip()
        self._cell = None
        if self._row is None:
            # A cell outside any row (malformed table): its text still counts as a line.
            self._line.append(f" {text} ")
            self._end_line()
        elif text:
            self._row.append(text)

    def _end_row(self) -> None:
        self._end_cell()
        if self._row is None:
            return
        cells, self._row = self._row, None
        if len(cells) == 2 and not cells[0].endswith(":"):
            self.lines.append(f"{cells[0]}: {cells[1]}")
        elif cells:
            self.lines.append(" ".join(cells))


def html_to_text(markup: str) -> str:
    """The visible text of `markup`, one line per block, table row or preformatted line."""
    try:
        return _extract(markup)
    except AssertionError:
        # html.parser raises AssertionError, instead of recovering, on some malformed
        # declarations and marked sections ("<![x]>"). Read every "<!" but comments as text.
        return _extract(_DECLARATION.sub("&lt;!", markup))


def _defused(markup: str) -> str:
    """`markup` with every "<" that starts no complete tag or comment written as text.

    html.parser before CPython 3.12.11 (CVE-2025-6069) takes quadratic time over unclosed tags
    and comments at the end of its input (80 KB of `<a x` took 56 s), and over marked sections
    (240 KB of `<![CDATA[x]>` took 4.6 s). Such a "<" is text to any parser; escaping it first
    keeps the time linear whatever Python runs us. A "<" inside a quoted attribute value also
    counts as unclosing the tag before it (`title="a<b"`): that tag's text then shows, which
    costs nothing in an alert mail, whereas a quote-aware scan would itself be quadratic.
    """
    comments_end = markup.rfind("-->") + 1  # 0 when no comment ends: every opening is unclosed
    closed, rest = markup[:comments_end], markup[comments_end:]
    defused = _UNCLOSED_TAG.sub("&lt;", closed + rest.replace("<!--", "&lt;!--"))
    return _MARKED_SECTION.sub("&lt;![", defused)


def _extract(markup: str) -> str:
    extractor = _TextExtractor()
    extractor.feed(_defused(markup))
    extractor.close()
    return "\n".join(extractor.lines)
