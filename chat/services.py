"""Nothing lives here any more: the turn engine is `chat.turns`. These two names remain only
for chatsite/asgi.py (owned elsewhere), until it imports them from `chat.turns.control`."""

from chat.turns.control import turns_drain, turns_expire_stale

__all__ = ["turns_drain", "turns_expire_stale"]
