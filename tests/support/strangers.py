"""A stranger to the rack, as a process of its own: it holds no secret and opens and closes TCP
connections to one port in rounds, as fast as it can (tests/integration/test_framed_strangers.py).

    python tests/support/strangers.py HOST:PORT [--per-round N] [--hold SECONDS] [--rounds N]

Each round opens `--per-round` connections, one after another; they take turns at five ways of
behaving: say nothing, send bytes that are not a frame, announce a frame of 4 GiB, send a hello
with a wrong rack secret, hang up at once. The round holds the rest open for `--hold` seconds,
then closes them all and prints ``round N: C connected, F failed``. It runs `--rounds` rounds
(0: until SIGTERM or SIGINT).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import struct
import sys
import time

from fusionrack.v1 import switch_pb2

WAYS = ("silent", "garbage", "oversized", "wrong-secret", "hang-up")


def wrong_hello() -> bytes:
    """A framed hello as a compute tray would say it, with a secret that is not the rack's."""
    hello = switch_pb2.ForwardHello(tray="compute-01", rack_secret=os.urandom(32))
    data = switch_pb2.ForwardFrame(hello=hello).SerializeToString()
    return struct.pack("<I", len(data)) + data


def behave(connection: socket.socket, way: str, rng: random.Random) -> bool:
    """Do `way` on a fresh connection; False when it is already closed."""
    if way == "hang-up":
        connection.close()
        return False
    if way == "garbage":
        connection.sendall(struct.pack("<I", rng.randrange(1, 200)) + rng.randbytes(64))
    elif way == "oversized":
        connection.sendall(struct.pack("<I", 0xFFFF_FFF0) + b"x" * 16)
    elif way == "wrong-secret":
        connection.sendall(wrong_hello())
    return True


def one_round(host: str, port: int, count: int, hold: float, rng: random.Random) -> tuple[int, int]:
    """Open `count` connections, behave, hold, close: (connected, failed to connect)."""
    held: list[socket.socket] = []
    connected = failed = 0
    for i in range(count):
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.settimeout(5)
        try:
            connection.connect((host, port))
            connected += 1
            if behave(connection, WAYS[i % len(WAYS)], rng):
                held.append(connection)
        except OSError:  # refused, reset by a switch tray that closed it, timed out
            failed += 1
            connection.close()
    time.sleep(hold)
    for connection in held:
        connection.close()
    return connected, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="HOST:PORT to connect to")
    parser.add_argument("--per-round", type=int, default=1500)
    parser.add_argument("--hold", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=0)
    args = parser.parse_args()
    host, _, port = args.address.rpartition(":")
    stop = False

    def stopping(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    rng = random.Random(24)
    n = 0
    while not stop and (not args.rounds or n < args.rounds):
        n += 1
        connected, failed = one_round(host, int(port), args.per_round, args.hold, rng)
        print(f"round {n}: {connected} connected, {failed} failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
