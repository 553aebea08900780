"""File names as stored and offered back: no path, no control or bidi characters. Pure."""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 200
FALLBACK_NAME = "file"


def safe_name(name: str, *, extension: str | None = None) -> str:
    """`name` without a directory, control characters (`Cc`), format characters (`Cf`:
    bidi overrides such as U+202E, zero-width ones) or separators, never hidden (no leading
    dot), at most `MAX_NAME_CHARS`. With `extension`, ends in it (replacing one that does
    not say what the bytes are)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = "".join(
        " " if unicodedata.category(c) in ("Zl", "Zp") or c.isspace() else c
        for c in base
        if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    kept = " ".join(kept.split()).lstrip(".").strip()
    stem, dot, ext = kept.rpartition(".")
    if not dot:
        stem, ext = kept, ""
    if extension is not None and ext.lower() not in _same(extension):
        stem, ext = (stem if dot else kept), extension
    stem = stem.strip() or FALLBACK_NAME
    room = MAX_NAME_CHARS - (len(ext) + 1 if ext else 0)
    return f"{stem[:room]}.{ext}" if ext else stem[:MAX_NAME_CHARS]


def _same(extension: str) -> set[str]:
    """Extensions that name the same type as `extension`."""
    aliases = [{"jpg", "jpeg"}, {"md", "markdown"}, {"txt", "text"}]
    return next((group for group in aliases if extension in group), {extension})
