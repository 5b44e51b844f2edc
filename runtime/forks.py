"""Many servers from one start-up: each forked, once everything is imported, into a process of
its own (`fusion-agent --fork`: one per tray; `fusion-agent --each` and `fusion-controller
--each`: one per rack of a fleet). A Python start-up costs about half a second of CPU in
imports; a fork costs milliseconds, and the children share the imported pages.

No gRPC object may exist before the fork (gRPC does not survive one): the parent only imports.
It writes `{name: pid}` of its children where asked, forwards SIGTERM / SIGINT to them and
waits for them; each child can also be stopped or killed on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fusionrack.cli import ArgumentParser, rack_name

__all__ = [
    "add_rack_arguments",
    "fork_each",
    "fork_jobs",
    "notify_ready",
    "parent_waits",
    "read_each_file",
]

log = logging.getLogger(__name__)


# In a child forked by fork_jobs(concurrency=...): the pipe that tells the parent it is ready;
# by fork_each: the file to create then (an `--each` entry's "ready_file").
_ready_fd: int | None = None
_ready_file: Path | None = None


def parent_waits() -> bool:
    """Whether something waits for this process's `notify_ready` (its forking parent, or the
    processes started after it)."""
    return _ready_fd is not None or _ready_file is not None


def notify_ready() -> None:
    """Say that this process is ready: to the process that forked it (which then starts the
    next), and in its ready file (which others wait for, `after`); nothing when nobody
    waits."""
    global _ready_fd, _ready_file
    if _ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(_ready_fd, b"r")
            os.close(_ready_fd)
        _ready_fd = None
    if _ready_file is not None:
        _ready_file.touch()
        _ready_file = None


def fork_jobs(
    jobs: dict[str, Callable[[], int]],
    pids_file: Path | None = None,
    concurrency: int = 0,
    may_start: Callable[[str], bool] | None = None,
) -> int:
    """Run every job (name: what the child runs, its exit status) in a child of its own; wait
    for them all. 0 when every child exited with 0. With `concurrency`, at most that many
    children are starting at once: the next is forked when one says it is ready
    (`notify_ready`) or exits, and a job only once `may_start(name)` says so. Tens of racks
    starting all at once on two cores starve each other: a rack late with its heartbeats is
    taken as lost, and the reconnections cost more CPU again."""
    global _ready_fd
    children: dict[int, str] = {}
    starting: dict[int, str] = {}  # read end of a starting child's pipe -> its name
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True  # and fork no more
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    def settle(timeout: float) -> None:
        """Wait up to `timeout` s for starting children to be ready (or gone)."""
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select(list(starting), [], [], timeout)
            for fd in readable:
                os.read(fd, 1)  # "r", or nothing: the child exited
                os.close(fd)
                del starting[fd]

    waiting = list(jobs)
    while waiting and not stopping:
        if concurrency and len(starting) >= concurrency:
            settle(1.0)
            continue
        name = next((n for n in waiting if may_start is None or may_start(n)), None)
        if name is None:
            settle(0.05)
            continue
        waiting.remove(name)
        job = jobs[name]
        ready_r, ready_w = os.pipe() if concurrency else (-1, -1)
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                for fd in [*starting, ready_r]:
                    if fd >= 0:
                        os.close(fd)
                _ready_fd = ready_w if ready_w >= 0 else None
                code = job()
            except BaseException:
                log.exception("%s failed", name)
            finally:
                logging.shutdown()
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        children[pid] = name
        if concurrency:
            os.close(ready_w)
            starting[ready_r] = name
    for fd in starting:
        os.close(fd)
    if pids_file is not None:
        pids = {name: pid for pid, name in children.items()}
        partial = pids_file.with_name(pids_file.name + ".partial")
        partial.write_text(json.dumps(pids) + "\n")
        partial.replace(pids_file)  # whole or absent: a reader polls for it
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except InterruptedError:
            continue
        name = children.pop(pid, None)
        if name is not None and code:
            log.warning("%s exited with status %d", name, os.waitstatus_to_exitcode(code))
            status = 1
    return status


def read_each_file(path: Path, program: str) -> list[dict[str, Any]]:
    """The processes an `--each` file asks for: a JSON list of `{"name", "argv", "log"}` (the
    child's name, its command-line arguments, the file its output goes to), each with an
    optional "ready_file" (created once it is ready) and "after" (a file to wait for before
    starting it: another entry's, or another program's, ready file). SystemExit saying what is
    wrong otherwise."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"{program}: error: cannot read --each {path}: {error}") from None
    names: set[str] = set()
    if not isinstance(entries, list) or not entries:
        raise SystemExit(f"{program}: error: --each {path}: expected a non-empty JSON list")
    for i, entry in enumerate(entries):
        ok = (isinstance(entry, dict) and isinstance(entry.get("name"), str)
              and isinstance(entry.get("log"), str) and isinstance(entry.get("argv"), list)
              and all(isinstance(a, str) for a in entry["argv"])
              and all(isinstance(entry.get(k, ""), str) for k in ("ready_file", "after"))
              and not set(entry) - {"name", "argv", "log", "ready_file", "after"})  # fmt: skip
        if not ok:
            raise SystemExit(f'{program}: error: --each {path}: entry {i} is not '
                             '{"name": str, "argv": [str, ...], "log": str, "ready_file": str, '
                             '"after": str} (the last two optional)')  # fmt: skip
        if entry["name"] in names:
            raise SystemExit(f"{program}: error: --each {path}: two entries named "
                             f"{entry['name']!r}")  # fmt: skip
        names.add(entry["name"])
    return entries


def fork_each(
    path: Path, pids_file: Path | None, main: Callable[[Sequence[str]], int], program: str
) -> int:
    """`--each FILE`: one child per entry of FILE (`read_each_file`), each running
    `main(argv)` with its output appended to its log, each once its "after" file exists, two
    per CPU starting at once (on two cores, 16 gb200 racks came up in 31 s one per CPU at a
    time, 22 s two per CPU, 29 s four per CPU, racks then starving each other)."""
    entries = {entry["name"]: entry for entry in read_each_file(path, program)}

    def job(entry: dict[str, Any]) -> Callable[[], int]:
        def run() -> int:
            global _ready_file
            fd = os.open(entry["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            # The parent's logging setup wrote to the parent's stderr: the child sets its own.
            logging.getLogger().handlers.clear()
            if entry.get("ready_file"):
                _ready_file = Path(entry["ready_file"])
                _ready_file.unlink(missing_ok=True)
            return main(entry["argv"])

        return run

    def may_start(name: str) -> bool:
        after = entries[name].get("after")
        return not after or Path(after).exists()

    jobs = {name: job(entry) for name, entry in entries.items()}
    return fork_jobs(jobs, pids_file, concurrency=2 * (os.cpu_count() or 1), may_start=may_start)


def _manifest_unless_each(args: argparse.Namespace) -> None:
    if args.manifest is None and args.each is None:
        raise argparse.ArgumentTypeError("--manifest is required (or --each FILE)")


def add_rack_arguments(parser: ArgumentParser) -> None:
    """`--manifest` and `--rack-name`, which name the rack to `fusion-agent` and
    `fusion-controller` alike (`--manifest` is required but with `--each`)."""
    parser.add_argument(
        "--manifest",
        metavar="PATH|NAME",  # read where the program runs (exit 1 when missing or wrong)
        help="rack manifest or preset (required but with --each)",
    )
    parser.add_check(_manifest_unless_each)
    parser.add_argument(
        "--rack-name",
        type=rack_name,
        metavar="NAME",
        help="the rack's name instead of the manifest's (racks of a fleet from one preset); "
        "every agent and the controller of a rack must be given the same",
    )
