"""Text as this service stores and shows it: mended for every database, and shortened
to one line for titles."""

from __future__ import annotations

import re

TITLE_CHARS = 80

# Markdown's marks, for reading a message as plain text (a search snippet): fences with
# their language, heading, quote and list markers at a line's start, emphasis and code
# marks, and links and images reduced to their text.
_MARKDOWN_LINE = re.compile(r"^\s*(?:```+\S*|~~~+\S*|#{1,6}\s+|>\s?|[-*+]\s+|\d+[.)]\s+)+", re.M)
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
# Underscores stay: in `snake_case` and `__init__` they are the text.
_MARKDOWN_MARKS = re.compile(r"(?<!\w)\*{1,3}(?=\S)|(?<=\S)\*{1,3}(?!\w)|`+")


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def plain_text(markdown: str) -> str:
    """`markdown` as a reader sees it, on one line: no fences, markers or emphasis marks."""
    text = _MARKDOWN_LINE.sub("", markdown)
    text = _MARKDOWN_LINK.sub(r"\1", text)
    return one_line(_MARKDOWN_MARKS.sub("", text))


def shortened(text: str, chars: int) -> str:
    """`text` on one line and at most `chars` long, its end cut to an ellipsis if need be."""
    line = one_line(text)
    return line if len(line) <= chars else line[: chars - 1] + "…"


def title_from(message: str) -> str:
    """A conversation's title from its first message: one line, at most `TITLE_CHARS`."""
    return shortened(message, TITLE_CHARS)


def storable(text: str) -> str:
    """`text` as every database stores it: JSON can carry NUL, which PostgreSQL refuses
    in text, and lone surrogates like "\\ud800", which are not UTF-8 at all; they become
    U+FFFD. Model replies are mended so (refusing the row would leave the turn
    unrecorded); requests carrying them are refused (`payloads`)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text
