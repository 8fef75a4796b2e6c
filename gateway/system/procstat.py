"""The one parser of Linux's per-process files, /proc/PID/stat and /proc/PID/status
(proc(5)). Pure functions, standard library only: the gateway's orphan reaper
(gateway/cgi/orphans.py) and the lab's /proc reader (lab/system/procfs.py, run
on the host and inside every image, the nginx image included) read with them.
"""

from __future__ import annotations

from gateway.numbers import parse_digits


def stat_fields(text: str) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command: state, ppid, pgrp, session, ...

    proc(5): ``pid (comm) state ppid pgrp session ...``, field 3 on. comm may
    hold spaces and parentheses, so the fields are split after the last ")".
    [] for text that is no stat line.
    """
    head, paren, rest = text.rpartition(")")
    return rest.split() if paren and "(" in head else []


def status_kib(text: str, key: str) -> int | None:
    """A ``kB`` line of ``/proc/PID/status`` (``VmRSS:   1234 kB``) -> 1234; None if absent."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return parse_digits((value.split() or [""])[0])
    return None
