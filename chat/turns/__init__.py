"""The turn engine: the lifecycle of one assistant reply.

    turn = await turn_start(owner=..., message="hi")      # start.py: rows exist before
                                                          # the upstream call
    async for event in turn_stream(turn=turn): ...       # stream.py: start, delta…, then
                                                          # end | error; finish.py records
                                                          # the row in a shielded `finally`

`control.py` stops turns (Stop, shutdown, stale sweep); `selectors.py` reads them back.
A producing worker holds a lease on its turn (`lease.py`); when it dies, another worker or
its own restart finishes the turn within seconds (`recover.py`).
Database work is O(1) per turn: one transaction to start, one to claim (deferred turns),
one to finish; turns that start or finish at the same moment share their start or finish
transaction (`chat.turns.batching`). Nothing touches the database per token.

This module is the engine's facade: views, commands, `chat.conversations` and the ASGI
lifespan import what they use from here, never from the modules behind it.
"""

from chat.turns.control import turn_cancel, turns_expire_stale, turns_shutdown, turns_sweep_stale
from chat.turns.detached import turn_detach, turn_log_find
from chat.turns.log import TurnLog
from chat.turns.recover import (
    lapsed_sweep_seconds,
    turns_abandon_unopened,
    turns_recover_at_startup,
    turns_recover_lapsed,
)
from chat.turns.selectors import (
    UNFINISHED,
    message_usage,
    shown_parts,
    stored_end_data,
    stream_url,
    turn_replay,
)
from chat.turns.start import Turn, choose_model, turn_claim, turn_start
from chat.turns.stream import turn_follow, turn_stream
from chat.turns.versions import NewVersion, turn_edit, turn_regenerate, turn_select

__all__ = [
    "UNFINISHED",
    "NewVersion",
    "Turn",
    "TurnLog",
    "choose_model",
    "lapsed_sweep_seconds",
    "message_usage",
    "shown_parts",
    "stored_end_data",
    "stream_url",
    "turn_cancel",
    "turn_claim",
    "turn_detach",
    "turn_edit",
    "turn_follow",
    "turn_log_find",
    "turn_regenerate",
    "turn_replay",
    "turn_select",
    "turn_start",
    "turn_stream",
    "turns_abandon_unopened",
    "turns_expire_stale",
    "turns_recover_at_startup",
    "turns_recover_lapsed",
    "turns_shutdown",
    "turns_sweep_stale",
]
