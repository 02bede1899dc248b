"""Pure: the rollout of one release, as a small state machine whose state lives
in `/paas/rollouts/<app>`, so a new leader resumes where the old one stopped.

The replicas themselves are moved by the planner (reconcile.py); this module
decides when a rollout is done, and when it has failed and must revert to the
previous release: a new replica crash-loops or fails to start, or no new
replica became available for `progress_deadline` seconds.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ROLLING, DONE, ROLLED_BACK, FAILED, SUPERSEDED = "rolling", "done", "rolled-back", "failed", "superseded"
CRASH_RESTARTS = 3


@dataclass(frozen=True)
class ReleaseObservation:
    desired: int                 # replicas the release should have
    available: int               # of them, healthy and (where routed) served by every router
    old_left: int                # replicas of other releases still assigned
    failing: Sequence[Mapping[str, Any]] = field(default_factory=tuple)   # status rows of broken new replicas


def start_rollout(release: int, previous: int | None, deadline: float, now: float) -> dict[str, Any]:
    return {"release": release, "previous": previous, "phase": ROLLING, "started": now, "progress_at": now,
            "available": 0, "deadline": deadline, "reason": None, "failing": [], "finished": None}


def is_rolling(rollout: Mapping[str, Any] | None) -> bool:
    return rollout is not None and rollout.get("phase") == ROLLING


def broken(row: Mapping[str, Any]) -> bool:
    return row.get("state") in ("crash-looping", "failed") or row.get("restarts", 0) >= CRASH_RESTARTS


def rollout_step(rollout: Mapping[str, Any], seen: ReleaseObservation, now: float) -> dict[str, Any]:
    """The next state of a rolling rollout; a finished one is returned unchanged.
    The caller reverts the app to `previous` when the phase becomes rolled-back."""
    r = dict(rollout)
    if r["phase"] != ROLLING:
        return r
    if seen.available > r["available"] or seen.old_left < r.get("old_left", seen.old_left):
        r["available"], r["progress_at"] = max(seen.available, r["available"]), now
    r["old_left"] = seen.old_left
    if seen.available >= seen.desired and seen.old_left == 0:
        r.update(phase=DONE, finished=now)
        return r
    crashed = [row for row in seen.failing if broken(row)]
    # with every new replica available, only old ones draining are left: that is not a stall
    stalled = now - r["progress_at"] > r["deadline"] and seen.available < seen.desired
    if not crashed and not stalled:
        return r
    if crashed:
        reason = f"{len(crashed)} new replica(s) crashed or could not start"
    else:
        reason = (f"no new replica became available for {r['deadline']:g}s "
                  f"({seen.available}/{seen.desired} available)")
    r.update(phase=ROLLED_BACK if r["previous"] else FAILED, finished=now, reason=reason,
             failing=[_evidence(row) for row in (crashed or seen.failing)][:3])
    return r


def _evidence(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a failing replica showed: for `paas deploy` to print."""
    return {k: row.get(k) for k in ("id", "node", "state", "restarts", "exit_code", "oom_killed", "error",
                                    "probe", "logs", "previous")}
