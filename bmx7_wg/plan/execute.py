"""Carrying out a plan so that one failure holds back only what depends on it.

The executor in `system.py` supplies `step` (one batch of actions against the live
system); this module decides what is tried, in which batches, and what a failure skips.
It is pure: tests drive it with a fake `step`.

- Device actions of one interface that follow each other go out as one batch (one UAPI
  transaction). If the batch fails, each of its actions is tried alone, so that one peer
  the device refuses does not keep the others off, and the failure names that peer.
- An action is skipped when a resource it needs failed (see `Action.needs`): a failed
  link skips everything on it; a failed route skips nothing else. A link that vanished
  or a device that does not answer (errors.Unreachable) fails its whole interface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bmx7_wg.errors import Bmx7WgError, ResourceConflict, Unreachable
from bmx7_wg.plan.actions import Action

Status = Literal["failed", "conflict", "skipped"]
# Carries out a batch; returns the actions as done (a key created meanwhile filled in).
Step = Callable[[list[Action]], Sequence[Action]]


@dataclass(frozen=True)
class Failure:
    """An action that failed, clashed with something bmx7-wg does not own, or was skipped."""

    action: Action
    status: Status
    reason: str
    error: Bmx7WgError | None = field(default=None, repr=False, compare=False)

    @property
    def resource(self) -> str:
        return self.action.resource

    def describe(self) -> str:
        return f"{self.action.describe()}: {self.status} ({self.resource}): {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.action.to_json(),
            "resource": self.resource,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass
class Outcome:
    done: list[Action] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def batches(actions: Sequence[Action]) -> list[list[Action]]:
    """Runs of device actions of one interface form one batch; every other action is its own."""
    out: list[list[Action]] = []
    i = 0
    while i < len(actions):
        action = actions[i]
        j = i + 1
        if action.device:
            while j < len(actions) and actions[j].device and actions[j].interface == action.interface:
                j += 1
        out.append(list(actions[i:j]))
        i = j
    return out


def execute(
    actions: Sequence[Action], step: Step, on_done: Callable[[Action], None] = lambda a: None
) -> Outcome:
    outcome = Outcome()
    failed: set[str] = set()  # resources that failed or were skipped

    def finished(done: Sequence[Action]) -> None:
        for a in done:
            outcome.done.append(a)
            on_done(a)

    def record(action: Action, status: Status, reason: str, error: Bmx7WgError | None = None) -> None:
        outcome.failures.append(Failure(action, status, reason, error))
        failed.add(action.resource)
        if isinstance(error, Unreachable):
            failed.add(action.interface)  # a vanished link or a hung device: all of it

    def attempt(batch: list[Action]) -> Bmx7WgError | None:
        try:
            finished(step(batch))
        except Bmx7WgError as exc:
            return exc
        return None

    for batch in batches(actions):
        runnable: list[Action] = []
        for action in batch:
            blocked = next((need for need in action.needs if need in failed), None)
            if blocked is None:
                runnable.append(action)
            else:
                record(action, "skipped", f"not tried: {blocked} failed")
        if not runnable:
            continue
        error = attempt(runnable)
        if error is None:
            continue
        if len(runnable) == 1 or isinstance(error, Unreachable):
            for action in runnable:
                record(action, _status(error), str(error), error)
            continue
        # Which action the device refused is known only by trying them one by one. (What
        # the batch got through before failing is sent again: device actions are idempotent.)
        for k, action in enumerate(runnable):
            one = attempt([action])
            if one is None:
                continue
            if isinstance(one, Unreachable):
                for rest in runnable[k:]:
                    record(rest, _status(one), str(one), one)
                break
            record(action, _status(one), str(one), one)
    return outcome


def _status(error: Bmx7WgError) -> Status:
    return "conflict" if isinstance(error, ResourceConflict) else "failed"
