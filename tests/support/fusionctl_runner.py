"""The real `fusionctl` executable, run as a user runs it, from asyncio tests (a test's event
loop may be serving the rack meanwhile, so every invocation is awaited, never run blocking)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FUSIONCTL = str(Path(sys.executable).with_name("fusionctl"))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout)


class Fusionctl:
    """Runs `fusionctl` with FUSIONRACK_CONTROLLER pointing at the test's controller."""

    def __init__(self, address: str, token_file: Path | None = None) -> None:
        """`token_file`: the bearer token to present (a rack `rack up` started elsewhere)."""
        self.env = {**os.environ, "FUSIONRACK_CONTROLLER": address, "NO_COLOR": "1"}
        if token_file is not None:
            self.env["FUSIONRACK_TOKEN_FILE"] = str(token_file)

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            FUSIONCTL, *args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def __call__(self, *args: str, timeout: float = 30) -> Result:
        process = await self.start(*args)
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def json(self, *args: str) -> Any:
        return (await self(*args, "-o", "json")).json()

    async def ok(self, *args: str, timeout: float = 30) -> str:
        result = await self(*args, timeout=timeout)
        assert result.returncode == 0, (
            f"fusionctl {' '.join(args)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        )
        return result.stdout


@contextlib.contextmanager
def held(port: int, host: str = "127.0.0.1") -> Iterator[None]:
    """`port` in use while the block runs: listened on here, unless something else holds it
    already (in use either way)."""
    with socket.socket() as s:
        with contextlib.suppress(OSError):
            s.bind((host, port))
            s.listen()
        yield
