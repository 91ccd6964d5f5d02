"""The one way a command fails on bad input: PtoolsError, and the exit codes every command keeps."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FINDINGS = 1  # a check found problems: drift, missing keys, unsafe pickle, dataset defects, diff
    USAGE = 2  # bad usage or bad input: file missing, corrupt, unsupported
    INTERRUPTED = 130  # Ctrl-C / SIGTERM


class PtoolsError(Exception):
    """A user-facing failure: printed as one line on stderr, never with a traceback (unless --debug).

    `message` names the file and the problem; `hint` says what to do about it.
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = int(exit_code)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"
