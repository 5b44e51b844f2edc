"""Free loopback ports for tests that start agents on a base-port scheme."""

from __future__ import annotations

import os
import socket


def free_base_port(span: int) -> int:
    """A base port with `span` free ports above it (checked, then released)."""
    for base in range(21000 + os.getpid() % 2000 * 10, 60000, 97):
        sockets = []
        try:
            for port in range(base, base + span):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range")
