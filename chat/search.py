"""Full-text search over message text, through each database's own index
(migration 0006): PostgreSQL's `to_tsvector('simple', content)` GIN index, SQLite's FTS5
table. Words are matched whole on PostgreSQL and as prefixes on SQLite; both ignore case."""

from __future__ import annotations

import re
from typing import Any

from django.db import connection, connections
from django.db.models import BooleanField, F, Func, Q, QuerySet, Value
from django.db.models.expressions import OrderBy, RawSQL

from chat.text import plain_text

_WORD = re.compile(r"\w+", re.UNICODE)
SNIPPET_CHARS = 160
SNIPPET_LEAD = 30
# SQLite's FTS5 index of message text (migration 0006).
_FTS_TABLE = "chat_message_fts"


def query_words(q: str) -> list[str]:
    """The words searched for: letters and digits, so no query syntax leaks through."""
    return _WORD.findall(q)[:20]


def message_matches(words: list[str]) -> Any:
    """A filter for messages whose text contains every word (through the index)."""
    return _indexed_match(
        words,
        "content",
        f"SELECT rowid FROM {_FTS_TABLE} WHERE {_FTS_TABLE} MATCH %s",
    )


def messages_matching(queryset: QuerySet[Any], words: list[str]) -> QuerySet[Any]:
    """`queryset` narrowed to messages containing every word, for a list shown newest
    first (the admin's changelist). On SQLite the FTS5 table is joined rather than read
    into an `id IN (…)` list: SQLite materialises such a list in full, every message of a
    common word, before it can sort and stop at a page; joined, and ordered by
    `newest_match_first`, it reads the index newest first and stops at the page."""
    if connections[queryset.db].vendor != "sqlite":
        return queryset.filter(message_matches(words))
    # extra(): the ORM has no other way to name a virtual table in FROM. The unary plus
    # keeps SQLite from probing the index once per message a filter selects (each probe
    # would run the whole match again): the index is read once, messages looked up by id.
    return queryset.extra(
        tables=[_FTS_TABLE],
        where=[f"{_FTS_TABLE} MATCH %s", f'"chat_message"."id" = +{_FTS_TABLE}.rowid'],
        params=[_fts5_query(words)],
    )


def joins_the_text_index(queryset: QuerySet[Any]) -> bool:
    return _FTS_TABLE in queryset.query.extra_tables


def newest_match_first() -> OrderBy:
    """Newest first by the FTS5 table's rowid (the message id): an order SQLite hands to
    the index, where the same order by `chat_message.id` would sort every match."""
    return RawSQL(f"{_FTS_TABLE}.rowid", []).desc()


def _fts5_query(words: list[str]) -> str:
    return " AND ".join(f'"{word}"*' for word in words)


def _indexed_match(words: list[str], field: str, sqlite_ids: str) -> Any:
    """`field` contains every word, through PostgreSQL's tsvector index on it, or the ids
    SQLite's FTS5 `sqlite_ids` query returns for a MATCH."""
    if connection.vendor == "postgresql":
        return _TsMatch(F(field), Value(" ".join(words)))
    if connection.vendor == "sqlite":
        return Q(pk__in=RawSQL(sqlite_ids, [_fts5_query(words)]))
    query = Q()  # any other database: a scan, still correct
    for word in words:
        query &= Q(**{f"{field}__icontains": word})
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
    full-text index (migration 0010)."""
    return _indexed_match(
        words,
        "title",
        "SELECT conversation_id FROM chat_conversation_fts_map WHERE rowid IN "
        "(SELECT rowid FROM chat_conversation_fts WHERE chat_conversation_fts MATCH %s)",
    )


def title_matches(words: list[str]) -> Q:
    query = Q()
    for word in words:
        query &= Q(title__icontains=word)
    return query


def snippet(text: str, words: list[str], width: int = SNIPPET_CHARS) -> str:
    """A short piece of `text` around the first word found: plain text (no markdown
    marks), on one line, starting and ending at a word."""
    flat = plain_text(text)
    lowered = flat.lower()
    positions = [p for p in (lowered.find(w.lower()) for w in words) if p >= 0]
    # A little before the match: the list shows two lines of it, the match among them.
    start = max(0, min(positions) - SNIPPET_LEAD) if positions else 0
    if start:  # back to the start of the word it fell in
        start = flat.rfind(" ", 0, start + 1) + 1
    end = start + width
    if end < len(flat):  # back to the end of the last whole word
        cut = flat.rfind(" ", start, end + 1)
        end = cut if cut > start else end
    piece = flat[start:end].strip()
    return ("…" if start else "") + piece + ("…" if end < len(flat) else "")
