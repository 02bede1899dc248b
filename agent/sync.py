"""Pure: what this node's containers should become, given its assignments.

`plan_sync` diffs the assignments of one node against the containers Docker
reports and returns idempotent actions; it also decides when a crashed
container may be restarted (capped exponential backoff with jitter).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paas.model import Assignment

RESTART_BASE = 1.0     # seconds
RESTART_CAP = 60.0
CRASHLOOP_AFTER = 3    # restarts within the backoff window that make a replica "crash-looping"


@dataclass(frozen=True)
class ContainerView:
    """What sync needs to know of one container (runtime.Container satisfies it)."""
    id: str
    replica: str
    state: str


@dataclass(frozen=True)
class RestartState:
    restarts: int = 0
    not_before: float = 0.0     # monotonic seconds


@dataclass(frozen=True)
class Create:
    assignment: Assignment

    @property
    def replica(self) -> str:
        return self.assignment.id


@dataclass(frozen=True)
class Restart:
    container_id: str
    replica: str


@dataclass(frozen=True)
class Remove:
    container_id: str
    replica: str
    reason: str


Action = Create | Restart | Remove


def plan_sync(assignments: Mapping[str, Assignment], containers: Sequence[ContainerView],
              restarts: Mapping[str, RestartState], now: float) -> list[Action]:
    """Actions that make the containers match the assignments. Removals come first,
    so a port or a name is free before its replacement is created."""
    removals: list[Action] = []
    others: list[Action] = []
    seen: set[str] = set()
    for c in sorted(containers, key=lambda c: (c.replica, c.state != "running", c.id)):
        if c.replica not in assignments:
            removals.append(Remove(c.id, c.replica, "not assigned to this node"))
        elif c.replica in seen:
            removals.append(Remove(c.id, c.replica, "duplicate container for the replica"))
        else:
            seen.add(c.replica)
            if c.state in ("exited", "dead", "created") and now >= restarts.get(c.replica, RestartState()).not_before:
                others.append(Restart(c.id, c.replica))
    for replica_id in sorted(assignments):
        if replica_id not in seen:
            others.append(Create(assignments[replica_id]))
    return removals + others


def after_restart(state: RestartState, now: float, jitter: float,
                  base: float = RESTART_BASE, cap: float = RESTART_CAP) -> RestartState:
    """Next state once a crashed container is started again. `jitter` in [0, 1)
    spreads restarts of many replicas so they do not crash in lockstep."""
    delay = min(cap, base * (2 ** state.restarts))
    delay *= 1.0 + 0.2 * jitter
    return RestartState(restarts=state.restarts + 1, not_before=now + delay)


def is_crash_looping(state: RestartState, now: float) -> bool:
    return state.restarts >= CRASHLOOP_AFTER and now < state.not_before
