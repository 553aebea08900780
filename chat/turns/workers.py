"""Who produces a turn: this process's producer id, and the lease a claim takes. (Renewing
it is `chat.turns.lease`; finishing the turns of a producer that died, `chat.turns.recover`.)"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

_identity: tuple[int, str] | None = None


def worker_id() -> str:
    """This process's name as a producer: `host:pid:boot`. The boot part is new in every
    process (a forked worker included), so a restarted process with its predecessor's pid
    (pid 1 in a container) is still someone else."""
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}")
    return _identity[1]


def worker_host_prefix() -> str:
    """What every producer id of this host starts with."""
    return f"{socket.gethostname()}:"


def worker_gone(worker: str) -> bool:
    """Whether the producer `worker` is known dead: it ran on this host, and its process is
    gone or is this one (a previous life with the same pid). Another host's workers are
    known dead only when their lease lapses."""
    host, _, rest = worker.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or worker == worker_id():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process now has that pid
        return False
    return False


def lease_until(now: datetime | None = None) -> datetime:
    """When a lease taken or renewed `now` lapses."""
    return (now or timezone.now()) + timedelta(seconds=settings.CHAT_LEASE_SECONDS)
