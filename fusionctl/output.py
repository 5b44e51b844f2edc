"""How `fusionctl` prints: aligned tables, state words in colour, JSON, progress.

One renderer for every table (`table`), one JSON printer (`print_json`), one colour rule
(`colour_enabled`): colour only when stdout is a terminal and `NO_COLOR` is not set
(https://no-color.org). State words are marked with `Word` so a table paints them, and only
them, after it has padded every column (escape codes would break the alignment otherwise).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from google.protobuf.message import Message

from fusionrack.wire import to_json

__all__ = [
    "Palette",
    "Progress",
    "Word",
    "colour_enabled",
    "human_bytes",
    "print_json",
    "rate",
    "table",
    "to_json",
]

GREEN, YELLOW, RED, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[0m"

# State and health words of the v1 API (enum names without their prefix, lower case) and of
# fusionctl's own reports, by how good they are.
COLOURS: Mapping[str, str] = {
    **dict.fromkeys(
        ("ok", "up", "active", "healthy", "ready", "yes", "reachable", "running", "answers"), GREEN
    ),
    **dict.fromkeys(
        ("init", "degraded_bandwidth", "degraded", "starting", "admin_down", "drained", "stale"),
        YELLOW,
    ),
    **dict.fromkeys(("down", "failed", "unhealthy", "no", "unreachable", "stopped", "silent"), RED),
}


class Word(str):
    """A cell holding a state word: `table` paints it when colour is on."""

    __slots__ = ()


def colour_enabled(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Colour when `stream` (stdout) is a terminal and NO_COLOR is unset or empty."""
    stream = sys.stdout if stream is None else stream
    environ = os.environ if environ is None else environ
    return bool(stream.isatty()) and not environ.get("NO_COLOR")


class Palette:
    """Paints state words; a no-op when colour is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, word: str) -> str:
        colour = COLOURS.get(word.lower())
        if not self.enabled or colour is None:
            return word
        return f"{colour}{word}{RESET}"


def table(
    rows: Sequence[Sequence[Any]],
    header: Sequence[str],
    paint: Callable[[str], str] | None = None,
) -> str:
    """Columns padded to their widest cell, two spaces apart; `Word` cells painted."""
    lines = [list(header), *(list(row) for row in rows)]
    texts = [[str(c) for c in line] for line in lines]
    widths = [max(len(line[i]) for line in texts) for i in range(len(header))]
    out = []
    for line, text in zip(lines, texts, strict=True):
        cells = []
        for cell, shown, width in zip(line, text, widths, strict=True):
            pad = " " * (width - len(shown))
            if paint is not None and isinstance(cell, Word):
                shown = paint(shown)
            cells.append(shown + pad)
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def human_bytes(value: float, unit: str = "B", base: int = 1024) -> str:
    """`1.5 GiB` (base 1024) or `100 GB/s` (base 1000), four significant digits."""
    prefixes = ("", "Ki", "Mi", "Gi", "Ti", "Pi") if base == 1024 else ("", "k", "M", "G", "T", "P")
    for prefix in prefixes:
        if value < base or prefix == prefixes[-1]:
            return f"{value:.4g} {prefix}{unit}"
        value /= base
    raise AssertionError("unreachable")


def rate(value: float) -> str:
    return human_bytes(value, "B/s", 1000)


def print_json(value: Message | Any, *, lines: bool = False, stream: TextIO | None = None) -> None:
    """Print a message (as `to_json`) or a plain JSON value; `lines`: one compact line, flushed
    (JSON Lines, for streams)."""
    stream = sys.stdout if stream is None else stream
    document = to_json(value) if isinstance(value, Message) else value
    if lines:
        stream.write(json.dumps(document, separators=(",", ":")) + "\n")
        stream.flush()
    else:
        stream.write(json.dumps(document, indent=2) + "\n")


class Progress:
    """Progress of a long wait, on stderr. On a terminal one line is redrawn in place with the
    elapsed time; otherwise each step is printed once, so logs stay readable."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.live = bool(self.stream.isatty())
        self.started = time.monotonic()
        self._step = ""
        self._drawn = False

    def update(self, step: str, detail: str = "") -> None:
        if self.live:
            elapsed = time.monotonic() - self.started
            text = f"{step}{': ' + detail if detail else ''} ({elapsed:.1f} s)"
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()
            self._drawn = True
        elif step != self._step:
            self.stream.write(f"{step}...\n")
            self.stream.flush()
        self._step = step

    def done(self) -> None:
        """Clear the live line (before the result is printed)."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False
