"""A full-screen terminal view with the standard library only (`fusionctl top`): the alternate
screen without a cursor, keys read one at a time (cbreak mode: no echo, no line editing; Ctrl-C
and Ctrl-Z still signal), and the terminal given back as it was on every way out.

ANSI escapes and termios rather than curses: the frame is already text (with the colour codes
`output.py` uses everywhere), and curses would own the whole terminal and its own key loop.
"""

from __future__ import annotations

import os
import termios
import tty
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO

__all__ = ["Screen"]

ENTER = "\033[?1049h\033[?25l"  # alternate screen (the shell's screen comes back), no cursor
LEAVE = "\033[?25h\033[?1049l"
HOME, CLEAR_LINE, CLEAR_BELOW = "\033[H", "\033[K", "\033[J"
DEFAULT_SIZE = (80, 24)


class Screen:
    """The terminal of `out` (stdout), keys from `keys` (stdin's descriptor, None when stdin is
    not a terminal). A context manager: `enter` on the way in, `leave` on every way out;
    both may also be called on their own (suspending with Ctrl-Z leaves and re-enters)."""

    def __init__(self, out: TextIO, keys: int | None) -> None:
        self.out = out
        self.keys = keys
        self._saved: list[object] | None = None
        self.active = False

    def enter(self) -> None:
        if self.active:
            return
        if self.keys is not None:
            self._saved = termios.tcgetattr(self.keys)
            tty.setcbreak(self.keys, termios.TCSANOW)
        self.out.write(ENTER)
        self.out.flush()
        self.active = True

    def leave(self) -> None:
        if not self.active:
            return
        self.active = False
        try:
            self.out.write(LEAVE)
            self.out.flush()
        finally:
            if self.keys is not None and self._saved is not None:
                # TCSAFLUSH: keys typed but not read (a held-down q) do not reach the shell.
                termios.tcsetattr(self.keys, termios.TCSAFLUSH, self._saved)

    def __enter__(self) -> Screen:
        self.enter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.leave()

    def size(self) -> tuple[int, int]:
        """(columns, lines) of the terminal now; 80 x 24 where it does not say (a fresh
        pseudo-terminal reports 0 x 0 until someone sets its size)."""
        try:
            size = os.get_terminal_size(self.out.fileno())
        except OSError:
            return DEFAULT_SIZE
        return size.columns or DEFAULT_SIZE[0], size.lines or DEFAULT_SIZE[1]

    def draw(self, lines: Sequence[str]) -> None:
        """Replace what is on screen with `lines` (each already cut to the width). Written
        over the old frame rather than after a clear, so the screen does not flicker; no
        newline after the last line, so a full screen never scrolls."""
        self.out.write(HOME + f"{CLEAR_LINE}\n".join(lines) + CLEAR_LINE + CLEAR_BELOW)
        self.out.flush()

    def read_keys(self) -> bytes:
        """What was typed (call when `keys` is readable); b"" when the terminal is gone."""
        assert self.keys is not None
        try:
            return os.read(self.keys, 1024)
        except OSError:  # EIO: the terminal hung up
            return b""
