"""One admitted job's place in the node's counts, from admission to its end.

A node counts its admitted jobs three ways: ``queued`` (waiting for a job
thread), ``running`` (on one), and ``held`` per submitter (either, for the
admission's fair share, docs/threat-model.md); it is idle, and a drain may end,
when nothing is queued or running. Every path that admits a job (a job on its
own stream, a batch, the local API) takes an ``Admission`` and moves it
through its states, so the counts and the idle flag always move together and a
job is counted out exactly once however it ends:

    queued --start()--> running --stop()--> off --end()--> ended
       `----------------------- end() --------------------´
"""

from __future__ import annotations

from typing import Any

__all__ = ["Admission"]


class Admission:
    """One job admitted by ``node`` for ``peer`` (counted as queued at once)."""

    __slots__ = ("node", "peer", "state")

    def __init__(self, node: Any, peer: str) -> None:
        self.node = node
        self.peer = peer
        self.state = "queued"
        node.queued += 1
        node.held[peer] += 1
        node._idle.clear()

    def start(self) -> None:
        """The job took a job thread: queued → running."""
        if self.state == "queued":
            self.node.queued -= 1
            self.node.running += 1
            self.state = "running"

    def stop(self) -> None:
        """The job left its job thread but has not ended (its answer is still to send)."""
        if self.state == "running":
            self.node.running -= 1
            self.state = "off"

    def end(self) -> None:
        """The job ended, however: it leaves every count (a second call does nothing)."""
        if self.state == "ended":
            return
        self.stop()
        node = self.node
        if self.state == "queued":
            node.queued -= 1
        self.state = "ended"
        node.held[self.peer] -= 1
        if node.held[self.peer] <= 0:
            del node.held[self.peer]
        if node.queued == 0 and node.running == 0:
            node._idle.set()
