"""Typed errors. Only `cli.main()` turns them into messages and exit codes."""

from __future__ import annotations

from dataclasses import dataclass


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
    """A change failed half-way. Names what failed and what was already done."""

    exit_code = 5

    def __init__(self, message: str, done: list[str] | None = None) -> None:
        self.done = done or []
        detail = message
        if self.done:
            detail += f" (already done: {len(self.done)} change(s); the next apply repairs the rest)"
        super().__init__(detail)


class KeyFileError(Bmx7WgError):
    """A key file cannot be read or created."""

    exit_code = 2


class UsageError(Bmx7WgError):
    """The command line is wrong."""

    exit_code = 64
