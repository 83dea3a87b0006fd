"""Whether something listens on a local TCP port, and which process of a container it is.

On Linux both come from /proc (no connection is made, so the service sees nothing). Elsewhere listening is a
connect attempt and the listener's process is unknown.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

PROC = Path("/proc")
TCP_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def listening(port: int) -> bool:
    if (PROC / "net" / "tcp").exists():
        return bool(_listening_inodes(port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _process_group(pid: str) -> int | None:
    try:
        stat = (PROC / pid / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])  # fields after "(comm)": state, ppid, pgrp


def listener_pid(port: int, pgid: int) -> int | None:
    """The process of process group `pgid` that holds the listening socket on `port` (Linux only)."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in os.listdir(PROC):
        if not entry.isdigit() or _process_group(entry) != pgid:
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(PROC / entry / "fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(PROC / entry / "fd" / fd) in inodes:
                        return int(entry)
    return None
