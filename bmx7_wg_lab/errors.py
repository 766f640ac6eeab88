"""The lab's typed errors; only `cli.main()` turns them into messages and exit codes."""

from __future__ import annotations


class LabError(Exception):
    """Something the operator can act on; the message says what and how."""

    exit_code = 1


class UsageError(LabError):
    exit_code = 2


class MissingTool(LabError):
    exit_code = 3


class NameClash(LabError):
    exit_code = 4


class NotEnoughResources(LabError):
    exit_code = 5


class NoSuchLab(LabError):
    exit_code = 6


class NodeFailed(LabError):
    """A daemon did not start or answer; the message names its log."""

    exit_code = 7


class NotConverged(LabError):
    """`up --wait` or a scenario of `measure` ran out of time."""

    exit_code = 8
