"""Search snippets (`chat.search.snippet`): what the sidebar shows under a hit."""

from __future__ import annotations

from chat.llm.demo import demo_reply
from chat.search import snippet
from chat.text import plain_text


def test_plain_text_drops_markdown_marks_and_keeps_the_words():
    text = "# Title\n\n> a **bold** claim\n\n- item one\n1. first\n\n```python\nx = `y`\n```\n"
    assert plain_text(text) == "Title a bold claim item one first x = y"
    assert plain_text("see [the docs](https://example.com) and ![a cat](c.png)") == (
        "see the docs and a cat"
    )
    # Underscores and lone stars are text, not emphasis.
    assert plain_text("call __init__ on snake_case, 2 * 3 * 4") == (
        "call __init__ on snake_case, 2 * 3 * 4"
    )


def test_a_snippet_starts_and_ends_at_a_word_around_the_match():
    text = demo_reply("Explain how the **streaming** of replies works")
    piece = snippet(text, ["streaming"])
    assert "streaming" in piece
    assert "**" not in piece and ">" not in piece and "```" not in piece
    assert piece.startswith("…") and piece.endswith("…")
    # Whole words at both ends: each word of the snippet is a word of the plain text.
    words = plain_text(text).split()
    inner = piece.strip("…").split()
    assert inner[0] in words and inner[-1] in words
    assert " ".join(inner) in " ".join(words)
    assert len(piece) <= 162


def test_a_short_text_is_the_snippet_whole():
    assert snippet("A *short* note", ["absent"]) == "A short note"
    assert snippet("word " * 100, ["zzz"]).endswith("word…")
