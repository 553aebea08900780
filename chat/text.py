"""Text as this service stores and shows it: mended for every database, and shortened
to one line for titles."""

from __future__ import annotations

TITLE_CHARS = 80


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


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
