"""Whether a campaign's process still runs: facts recorded when it starts, checked when shown.

A hunt that is killed (SIGKILL, the OOM killer, a closed laptop) cannot mark its campaign as
stopped, so the store records who runs each campaign — process id, host, and the process's start
time as the kernel counts it (with the boot it belongs to) — and every listing checks those facts
instead of trusting the recorded ``running``:

- ``running`` and the process is alive: ``running``;
- ``running`` on this host, but the process is gone, a zombie, or its pid now belongs to another
  process (another start time): ``interrupted``, resumable with ``hunt --resume``;
- ``running`` on another host: shown as recorded, with the host (its processes cannot be seen
  from here);
- ``done`` and ``interrupted`` (a hunt stopped by Ctrl-C or SIGTERM) are shown as recorded.

Nothing here writes: readers of the store never change it.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

#: The statuses a campaign shows.
CAMPAIGN_STATUSES = ("running", "done", "interrupted")


def host() -> str:
    return socket.gethostname()


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc, or None where there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and ')'
    return fields[0], fields[19]  # fields 3 and 22 of proc(5)


def _boot() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The identity of process ``pid``'s start (boot and start tick), or None where unknown."""
    st = _stat(pid)
    return f"{_boot()}/{st[1]}" if st else None


def this_process() -> dict[str, Any]:
    """The facts a campaign records about the process that runs it."""
    return {"pid": os.getpid(), "host": host(), "proc_start": process_start(os.getpid())}


def alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` on this host is alive and is the one that started at ``start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except (OverflowError, OSError):
        return False
    st = _stat(pid)
    if st is None:
        return True  # no /proc: existence is all there is to know
    if st[0] in ("Z", "X"):  # died, not yet reaped by its parent
        return False
    return start is None or process_start(pid) == start


def shown_status(camp: dict[str, Any]) -> str:
    """The status to show for a campaign row (see the module docstring)."""
    status = camp["status"]
    if status != "running" or not camp.get("pid") or camp.get("host") != host():
        return status
    return "running" if alive(int(camp["pid"]), camp.get("proc_start")) else "interrupted"


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "—"


def status_text(camp: dict[str, Any]) -> str:
    """One line for people: the shown status and the facts behind it."""
    status = camp["status"]
    if status == "running" and camp.get("host") and camp["host"] != host():
        return f"running on {camp['host']} (as recorded there), last seen {when(camp.get('last_seen'))}"
    if status == "running":
        pid = f"pid {camp['pid']}" if camp.get("pid") else "as recorded: no process id to check"
        return f"running ({pid}), last seen {when(camp.get('last_seen'))}"
    if status == "interrupted":
        return f"interrupted, last seen {when(camp.get('last_seen'))}"
    return status


def resume_hints(camps: list[dict[str, Any]], limit: int = 5) -> list[str]:
    """A line for each campaign that did not finish (at most ``limit``, then how many more)."""
    lines = []
    for c in camps[:limit]:
        hint = f" — fuzzconv hunt --resume {c['id']} continues it" if c["status"] == "interrupted" else ""
        lines.append(f"campaign {c['id']} ({c['model']}): {status_text(c)}{hint}")
    if len(camps) > limit:
        lines.append(f"… {len(camps) - limit} more campaigns that did not finish: fuzzconv campaigns")
    return lines
