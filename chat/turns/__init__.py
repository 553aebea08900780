"""The turn engine: the lifecycle of one assistant reply.

    turn = await turn_start(owner=..., message="hi")      # start.py: rows exist before
                                                          # the upstream call
    async for event in turn_stream(turn=turn): ...       # stream.py: start, delta…, then
                                                          # end | error; finish.py records
                                                          # the row in a shielded `finally`

`control.py` stops turns (Stop, shutdown, stale sweep); `selectors.py` reads them back.
Database work is O(1) per turn: one transaction to start, one to claim (deferred turns),
one to finish; turns that start or finish at the same moment share their start or finish
transaction (`chat.turns.batching`). Nothing touches the database per token.
"""
