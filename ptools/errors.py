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


def printable(text: str) -> str:
    """`text` with control characters and undecodable bytes escaped (`\\n` -> `\\x0a`).

    File names come from the file system and from files: a newline in one would split an error line in
    two, an escape sequence would drive the terminal, and a byte that is not UTF-8 (kept by Python as a
    lone surrogate) would make printing itself fail.
    """
    out = []
    for ch in text:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:  # surrogateescape: the original byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)
