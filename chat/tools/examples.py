"""The example tools the offline demo enables; a pattern for your own (any plain function
with type hints and a docstring, named in `CHAT_TOOLS`)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from chat.models import Message
from chat.search import message_matches, query_words, snippet
from chat.tools.registry import Caller

# Places people ask about by name rather than by time zone.
_CITIES = {
    "tokyo": "Asia/Tokyo",
    "london": "Europe/London",
    "paris": "Europe/Paris",
    "berlin": "Europe/Berlin",
    "new york": "America/New_York",
    "san francisco": "America/Los_Angeles",
    "sydney": "Australia/Sydney",
}


def current_time(timezone: str) -> dict[str, str]:
    """The current date and time in a time zone.

    Args:
        timezone: An IANA time zone such as Asia/Tokyo or Europe/Paris (a city name also works).
    """
    name = _CITIES.get(timezone.strip().lower(), timezone.strip())
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = sorted(z for z in available_timezones() if name.lower() in z.lower())[:5]
        raise ValueError(f"unknown time zone {timezone!r}; close: {', '.join(close)}") from None
    now = datetime.now(zone)
    return {
        "timezone": name,
        "time": now.strftime("%H:%M"),
        "date": now.date().isoformat(),
        "iso": now.isoformat(timespec="seconds"),
    }


def search_conversations(query: str, caller: Caller, limit: int = 5) -> list[dict[str, str]]:
    """Search the asking person's own earlier conversations for messages containing words.

    Args:
        query: The words to look for.
        limit: How many matching messages to return at most (1 to 20).
    """
    words = query_words(query)
    if not words:
        return []
    rows = (
        caller.messages()
        .filter(message_matches(words))
        .select_related("conversation")
        .order_by("-pk")[: max(1, min(limit, 20))]
    )
    return [_found(m, words) for m in rows]


def _found(message: Message, words: list[str]) -> dict[str, str]:
    return {
        "conversation": str(message.conversation_id),
        "title": message.conversation.title,
        "role": message.role,
        "when": message.created_at.isoformat(timespec="minutes"),
        "text": snippet(message.content, words),
    }
