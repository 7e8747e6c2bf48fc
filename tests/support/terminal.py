"""A command on a pseudo-terminal: what it shows, and answers typed to its questions
(tests of terminal output and of prompts, with the real CLI in a subprocess)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from pathlib import Path


def on_terminal(command: list[str], *, env: dict[str, str], cwd: Path,
                columns: int | None = None, stdin: bool = False,
                answers: dict[bytes, bytes] | None = None,
                timeout: float = 60.0) -> tuple[int, bytes]:
    """Run ``command`` with stdout and stderr (and stdin when ``stdin``) on a new
    pseudo-terminal, ``columns`` wide if given; once the screen shows a key of
    ``answers``, type its value (each once).  Returns the exit status and every
    byte the terminal showed, read until the command closes it (or ``timeout``)."""
    master, slave = pty.openpty()
    if columns is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(command, stdin=slave if stdin else subprocess.DEVNULL,
                               stdout=slave, stderr=slave, close_fds=True, cwd=cwd, env=env)
    os.close(slave)
    seen = b""
    pending = dict(answers or {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        for prompt in [prompt for prompt in pending if prompt in seen]:
            os.write(master, pending.pop(prompt))
        if process.poll() is not None and not ready:
            break
    os.close(master)
    return process.wait(timeout=30), seen
