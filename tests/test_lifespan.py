"""chat/ops/lifespan.py: a worker's own work runs before it serves, now and then while it
serves, and before it exits, each answered to the server in turn. (The turn engine's work
in it, through chatsite/asgi.py: tests/test_faults.py.)"""

from __future__ import annotations

import asyncio

import pytest

from chat.ops import lifespan as lifespan_module
from chat.ops.lifespan import lifespan


class Server:
    """The server's side of a lifespan: what it sent, and what the worker ran, in order."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.log: list[str] = []
        self.swept = asyncio.Event()

    async def send(self, message: dict) -> None:
        self.log.append(message["type"])

    def hook(self, name: str):
        async def run() -> None:
            self.log.append(name)
            if name == "periodic":
                self.swept.set()

        return run

    def run(self, every: float) -> asyncio.Task[None]:
        return asyncio.create_task(
            lifespan(
                self.inbox.get,
                self.send,
                startup=self.hook("startup"),
                periodic=[(self.hook("periodic"), every)],
                shutdown=self.hook("shutdown"),
            )
        )


@pytest.mark.asyncio
async def test_each_hook_runs_before_the_server_is_answered(monkeypatch):
    server = Server()
    monkeypatch.setattr(
        lifespan_module.metrics, "worker_exited", lambda: server.log.append("worker_exited")
    )
    worker = server.run(every=0.01)
    server.inbox.put_nowait({"type": "lifespan.startup"})
    await asyncio.wait_for(server.swept.wait(), 5)
    server.inbox.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(worker, 5)
    assert server.log[:2] == ["startup", "lifespan.startup.complete"]
    assert "periodic" in server.log[2:-3]
    assert server.log[-3:] == ["shutdown", "worker_exited", "lifespan.shutdown.complete"]


@pytest.mark.asyncio
async def test_every_zero_never_starts_the_periodic_work(monkeypatch):
    def never(*args: object) -> None:
        raise AssertionError("the periodic work was started")

    monkeypatch.setattr(lifespan_module, "_repeat", never)
    server = Server()
    server.inbox.put_nowait({"type": "lifespan.startup"})
    server.inbox.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(server.run(every=0), 5)
    assert "lifespan.shutdown.complete" in server.log
