"""This process's open files, as /proc shows them (an unlinked file too)."""

from __future__ import annotations

import os


def open_in(directory: object) -> list[str]:
    """This process's open files inside ``directory`` (an unlinked one too)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # (the listing's own descriptor, closed since)
            continue
        if target.startswith(f"{directory}/"):
            found.append(target)
    return found
