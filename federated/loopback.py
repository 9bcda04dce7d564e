"""An in-process Flower Grid: every node is the ClientApp called in this process.

For tests and benchmarks of the server logic (SecAgg+ included) without a SuperLink: messages are
copied both ways as a transport would (nothing is shared between server and client objects),
each node keeps its own Context (SecAgg+ keeps its keys in it across the protocol's stages),
and every reply the server receives is kept in ``received`` for inspection. A node can be made
to drop out: after a given number of train messages it stops answering, like a device that went
offline mid-round.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from recops.config import Settings

# The code a SuperNode gives a reply whose ClientApp raised.
CLIENT_APP_RAISED = 2


class LoopbackGrid(Grid):
    """``num_nodes`` nodes with ids 1..n; node i holds partition i - 1 of ``num_nodes``."""

    def __init__(self, client_app: ClientAppCallable, run_config: Mapping[str, Any],
                 num_nodes: int, *, silent_after: Mapping[int, int] | None = None) -> None:
        self.client_app = client_app
        self.contexts = {
            nid: Context(run_id=1, node_id=nid,
                         node_config={"partition-id": nid - 1, "num-partitions": num_nodes},
                         state=RecordDict(), run_config=dict(run_config))
            for nid in range(1, num_nodes + 1)}
        # node id -> how many train messages it answers before it goes silent for good
        self.silent_after = dict(silent_after or {})
        self.train_seen: dict[int, int] = {}
        self.received: list[Message] = []
        self.client_seconds = 0.0
        self._run = Run.create_empty(1)
        self._pending: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def _deliver(self, msg: Message) -> Message | None:
        nid = msg.metadata.dst_node_id
        if nid not in self.contexts:
            return None
        if msg.metadata.message_type.startswith("train"):
            seen = self.train_seen.get(nid, 0)
            if nid in self.silent_after and seen >= self.silent_after[nid]:
                return None  # offline: no reply ever comes
            self.train_seen[nid] = seen + 1
        # What crosses the wire is a copy: a ClientApp cannot touch the server's objects.
        inbound = copy.deepcopy(msg)
        started = time.perf_counter()
        try:
            reply = self.client_app(inbound, self.contexts[nid])
        except Exception as exc:  # the SuperNode turns a crash into an error reply
            reply = Message(Error(CLIENT_APP_RAISED, f"{type(exc).__name__}: {exc}"),
                            reply_to=inbound)
        self.client_seconds += time.perf_counter() - started
        return copy.deepcopy(reply)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for i, msg in enumerate(messages):
            reply = self._deliver(msg)
            key = f"{len(self._pending)}-{i}"
            if reply is not None:
                self._pending[key] = reply
            ids.append(key)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        out = [self._pending.pop(m) for m in message_ids if m in self._pending]
        self.received.extend(out)
        return out

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))


def run_in_process(settings: Settings, run_dir: Path, run_config: dict[str, Any], *,
                   num_clients: int, timeout: float = 3600.0,
                   poll: Callable[[], None] | None = None) -> None:
    """The ServerApp over a :class:`LoopbackGrid`, in this process: same signature as the
    engines' runners (``federated.engines.run_simulation``), for tests and quick measurements."""
    from federated import client_app, server_app

    grid = LoopbackGrid(client_app.app, run_config, num_clients)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config=dict(run_config))
    server_app.main(grid, context)
    if poll is not None:
        poll()
