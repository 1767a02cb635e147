"""Process groups: how the launcher and the demo stop a server or a training run with everything it forked.

A vLLM server forks engine workers and `accelerate launch` forks one process per rank, so each is started in
its own session (`start_new_session=True`) and stopped as a group. Zombies count as gone: their parent reaps
them.
"""

from __future__ import annotations

import os
import signal
import time


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie is dead for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def group_members(pgid: int) -> list[int]:
    """Live processes of the process group `pgid` (read from /proc; the leader included if alive)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def wait_group(pgid: int, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the group to end; True if it did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.2)
    return not group_alive(pgid)


def signal_members(pgid: int, sig: int) -> None:
    """Send `sig` to every process of the group but its leader (e.g. the ranks under `accelerate launch`)."""
    for pid in group_members(pgid):
        if pid != pgid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def stop_process_group(pid: int, grace_s: float = 15.0) -> None:
    """Stop the session/process group led by `pid`: SIGTERM, then SIGKILL what is left after `grace_s`."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if wait_group(pgid, wait_s):
            return
