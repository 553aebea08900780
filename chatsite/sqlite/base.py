"""SQLite with write transactions queued on a lock inside the process.

SQLite allows one writer. Its busy handler makes waiting writers poll with growing
sleeps, which is unfair: under a burst of hundreds of concurrent turns (each starts with
a `BEGIN IMMEDIATE`), some keep losing and fail with "database is locked" after the busy
timeout while the database sits idle between polls. Queued on a lock, a writer waits only
for the transactions ahead of it. The busy timeout still arbitrates between processes,
and a lock not had within it is skipped rather than waited on forever.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db.backends.sqlite3 import base

_write_lock = threading.Lock()


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_write_lock = False

    def _lock_timeout(self) -> float:
        return float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))

    def _start_transaction_under_autocommit(self) -> None:
        self._holds_write_lock = _write_lock.acquire(timeout=self._lock_timeout())
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_write_lock()
            raise

    def _release_write_lock(self) -> None:
        if self._holds_write_lock:
            self._holds_write_lock = False
            _write_lock.release()

    def _commit(self) -> Any:
        try:
            return super()._commit()
        finally:
            self._release_write_lock()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()
        finally:
            self._release_write_lock()

    def _close(self) -> Any:
        try:
            return super()._close()
        finally:
            self._release_write_lock()
