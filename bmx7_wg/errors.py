"""Typed errors. Only `cli.main()` turns them into messages and exit codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Bmx7WgError(Exception):
    """Base of every error bmx7-wg reports to a user without a traceback."""

    exit_code = 1


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a configuration file, located for the user."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


class ConfigError(Bmx7WgError):
    """The configuration is invalid; every problem found is listed."""

    exit_code = 2

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("\n".join(str(d) for d in diagnostics))
        self.diagnostics = diagnostics


class BackendUnavailable(Bmx7WgError):
    """The requested WireGuard implementation cannot be used on this machine."""

    exit_code = 3


class ConflictError(Bmx7WgError):
    """The system holds something bmx7-wg must not touch (e.g. a foreign interface)."""

    exit_code = 4


class ApplyError(Bmx7WgError):
    """A change could not be made. The boundaries (netlink, the WireGuard device,
    wireguard-go) raise subclasses of it that name the interface and the operation."""

    exit_code = 5

    def __init__(self, message: str, done: list[str] | None = None) -> None:
        self.done = done or []
        detail = message
        if self.done:
            detail += f" (already done: {len(self.done)} change(s); the next apply repairs the rest)"
        super().__init__(detail)


class ResourceConflict(ApplyError):
    """A change clashes with something bmx7-wg does not own (a foreign route or address
    in the way). Only that change fails; bmx7-wg never removes what it did not make."""


class Unreachable(ApplyError):
    """The boundary itself does not answer (a vanished or hung WireGuard device): every
    other change to it would fail alike, so none is tried one by one."""


class ChangesFailed(ApplyError):
    """Some changes of an apply failed; everything independent of them was made.

    `failures` are the executor's records (each names its resource and reason); the exit
    code is that of the first failure with a meaning of its own (an unavailable backend
    stays 3, a key file that cannot be written 2), else 5."""

    # 1 is "unexpected" and 5 this error's own: neither says more than 5.
    _GENERIC = frozenset({1, 5})

    def __init__(self, failures: Sequence[FailureRecord], applied: int) -> None:
        self.failures = tuple(failures)
        self.applied = applied
        lines = [
            f"{len(self.failures)} change(s) failed, {applied} applied; the next apply retries the rest:"
        ]
        lines += [f"  {f.describe()}" for f in self.failures]
        super().__init__("\n".join(lines))
        self.exit_code = next(
            (
                f.error.exit_code
                for f in self.failures
                if f.error is not None and f.error.exit_code not in self._GENERIC
            ),
            ApplyError.exit_code,
        )


class RollbackFailed(ChangesFailed):
    """The rollback of an `apply --confirm` could not undo everything: what is left as
    applied is named, change by change."""

    def __init__(self, failures: Sequence[FailureRecord], applied: int, why: str) -> None:
        super().__init__(failures, applied)
        left = len(self.failures)
        lines = [f"rollback incomplete ({why}): {applied} change(s) undone, {left} left as applied:"]
        lines += [f"  {f.describe()}" for f in self.failures]
        self.args = ("\n".join(lines),)


class FailureRecord(Protocol):
    @property
    def error(self) -> Bmx7WgError | None: ...

    def describe(self) -> str: ...


class StateReadError(Bmx7WgError):
    """The current state (links, addresses, routes, a WireGuard device) cannot be read.
    Nothing was changed. The boundary's own error is the `__cause__`."""

    exit_code = 6


class LockBusy(Bmx7WgError):
    """Another bmx7-wg holds the lock of this network namespace for too long."""

    exit_code = 7


class ConfirmPending(Bmx7WgError):
    """An `apply --confirm` waits for its confirmation in this network namespace: another
    change now (apply, down, a second apply --confirm) is refused."""

    exit_code = 8


class NotConfirmed(Bmx7WgError):
    """An `apply --confirm` was not confirmed and was rolled back: the system and the
    configuration file are as they were before it."""

    exit_code = 9


class KeyFileError(Bmx7WgError):
    """A key file cannot be read or created."""

    exit_code = 2


class WatchLimit(Bmx7WgError):
    """The kernel refused the service a file watch: a system limit, not a fault of ours."""


class UsageError(Bmx7WgError):
    """The command line is wrong."""

    exit_code = 64
