"""Full-text search over message text, through each database's own index
(migration 0006): PostgreSQL's `to_tsvector('simple', content)` GIN index, SQLite's FTS5
table. Words are matched whole on PostgreSQL and as prefixes on SQLite; both ignore case."""

from __future__ import annotations

import re
from typing import Any

from django.db import connection
from django.db.models import BooleanField, F, Func, Q, Value
from django.db.models.expressions import RawSQL

from chat.text import one_line

_WORD = re.compile(r"\w+", re.UNICODE)
SNIPPET_CHARS = 160


def query_words(q: str) -> list[str]:
    """The words searched for: letters and digits, so no query syntax leaks through."""
    return _WORD.findall(q)[:20]


def message_matches(words: list[str]) -> Any:
    """A filter for messages whose text contains every word (through the index)."""
    if connection.vendor == "postgresql":
        return _TsMatch(F("content"), Value(" ".join(words)))
    if connection.vendor == "sqlite":
        match = " AND ".join(f'"{word}"*' for word in words)
        return Q(
            pk__in=RawSQL(
                "SELECT rowid FROM chat_message_fts WHERE chat_message_fts MATCH %s", [match]
            )
        )
    query = Q()  # any other database: a scan, still correct
    for word in words:
        query &= Q(content__icontains=word)
    return query


class _TsMatch(Func):
    """`to_tsvector('simple', content) @@ plainto_tsquery('simple', words)`: the index's own
    expression (Django's SearchVector would wrap the column in COALESCE, which the index
    does not cover), compiled with whatever alias the query gives the table."""

    template = "(to_tsvector('simple', %(expressions)s))"
    arg_joiner = ") @@ plainto_tsquery('simple', "
    output_field = BooleanField()


def title_words_match(words: list[str]) -> Any:
    """A filter for conversations whose title contains every word, through the title's
    full-text index (migration 0010); as `message_matches`, whole words on PostgreSQL and
    prefixes on SQLite."""
    if connection.vendor == "postgresql":
        return _TsMatch(F("title"), Value(" ".join(words)))
    if connection.vendor == "sqlite":
        match = " AND ".join(f'"{word}"*' for word in words)
        return Q(
            pk__in=RawSQL(
                "SELECT conversation_id FROM chat_conversation_fts_map WHERE rowid IN "
                "(SELECT rowid FROM chat_conversation_fts WHERE chat_conversation_fts MATCH %s)",
                [match],
            )
        )
    return title_matches(words)


def title_matches(words: list[str]) -> Q:
    query = Q()
    for word in words:
        query &= Q(title__icontains=word)
    return query


def snippet(text: str, words: list[str], width: int = SNIPPET_CHARS) -> str:
    """A short piece of `text` around the first word found, on one line."""
    flat = one_line(text)
    lowered = flat.lower()
    positions = [p for p in (lowered.find(w.lower()) for w in words) if p >= 0]
    if not positions:
        return flat[:width] + ("…" if len(flat) > width else "")
    start = max(0, min(positions) - width // 3)
    piece = flat[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")
