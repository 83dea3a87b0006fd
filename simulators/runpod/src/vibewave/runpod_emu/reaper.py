"""`python -m vibewave.runpod_emu.reaper`: kills the pods' containers when the emulator dies without stopping them.

Each container runs in a process group of its own (a container's processes die together, which the emulator
relies on to stop one). So no signal aimed at the emulator, its process group or its terminal reaches them,
and a SIGKILLed emulator would leave them running. The emulator starts this watchdog in a session of its own
and writes `+<pgid>` / `-<pgid>` lines to its stdin as containers start and end. When stdin reaches end of
file, because the emulator exited in whatever way, it SIGKILLs every group still listed and exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main() -> None:
    groups: set[int] = set()
    for line in sys.stdin:
        sign, number = line[:1], line[1:].strip()
        if number.isdigit():
            (groups.add if sign == "+" else groups.discard)(int(number))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main()
