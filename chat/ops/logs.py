"""`CHAT_LOG_FORMAT=json`: one JSON object per log line, for log stores to search.

Each line has `time` (UTC, ISO 8601), `level`, `logger`, `message`, `request_id` (of the
request being served, `chat.ops.request_ids`; empty outside requests) and whatever the call
passed as `extra` (e.g. "turn finished": `message_id`, `model`, `status`, tokens,
`ttft_ms`), plus `exc` for a traceback.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from chat.ops import request_ids

# Attributes every LogRecord has: anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_ids.current.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra value JSON has no type for (a Decimal, a UUID) is its text.
        return json.dumps(entry, ensure_ascii=False, default=str)
