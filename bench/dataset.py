"""A deterministic benchmark tree: small text files, medium files, two big ones.

At ``scale=1.0`` (about 700 MB):

* ``small/dNNN/fNNNNN.txt`` — 20 000 text files of 200 B – 6 KiB (~60 MB),
  100 to a directory, like ``/etc`` or a source tree;
* ``medium/mNNN.{txt,bin}`` — 300 files of 0.25–2 MiB (~350 MB), two thirds
  text (logs), one third random bytes (already compressed data);
* ``big/image.img`` — 128 MiB of random bytes (a disk image, incompressible);
* ``big/dump.sql`` — 128 MiB of text (a database dump, compressible).

``scale`` shrinks counts and sizes proportionally (``scale=0.05`` builds
~35 MB in well under a second).  The same ``(scale, seed)`` always gives the
same bytes: everything comes from ``random.Random(seed)``, text from a
generated word list, never from ``os.urandom``.

``mutate(root, seed)`` applies a ~1 % change like a day on a real host: edits
some small files, rewrites a few MiB inside the dump in place, appends 1 MiB
to a medium file and to the image, adds and deletes a few files.

Used by ``bench_archive.py`` and ``bench_restore.py``; keep the API stable:
``make_tree(root, scale=1.0, seed=1) -> dict`` and ``mutate(root, seed) -> dict``.
"""

from __future__ import annotations

import random
from pathlib import Path

MIB = 1 << 20

SMALL_FILES = 20_000
SMALL_PER_DIR = 100
SMALL_MIN, SMALL_MAX = 200, 6 << 10
MEDIUM_FILES = 300
MEDIUM_MIN, MEDIUM_MAX = MIB // 4, 2 * MIB
BIG_SIZE = 128 * MIB

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "ex",
              "on", "al", "is", "ur", "be", "do", "fi", "gu", "ha", "jo", "ly", "wy")
_LINE_POOL = 4096


def _words(rng: random.Random, count: int = 3000) -> list[str]:
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))
            for _ in range(count)]


class _Text:
    """Fast deterministic text: lines drawn from a pool of generated lines."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        words = _words(rng)
        self.lines = [" ".join(rng.choices(words, k=rng.randint(4, 16)))
                      for _ in range(_LINE_POOL)]

    def text(self, size: int, numbered: str | None = None, start: int = 0) -> bytes:
        """About ``size`` bytes of text (exactly ``size``), lines optionally numbered."""
        if size <= 0:
            return b""
        count = size // 50 + 2
        picks = self.rng.choices(self.lines, k=count)
        if numbered:
            body = "".join(f"{numbered} ({start + i}, '{line}');\n" for i, line in enumerate(picks))
        else:
            body = "\n".join(picks) + "\n"
        data = body.encode()
        while len(data) < size:  # rare: lines shorter than expected
            data += data
        return data[:size - 1] + b"\n" if size > 1 else b"\n"


def _scaled(value: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(value * scale))


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _write_big(path: Path, size: int, make) -> None:
    """Write ``size`` bytes produced by ``make(n)`` in 8 MiB pieces."""
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            n = min(left, 8 * MIB)
            handle.write(make(n))
            left -= n


def make_tree(root: Path, scale: float = 1.0, seed: int = 1) -> dict:
    """Create the benchmark tree under ``root`` (must be absent or empty).

    Returns counts and byte totals: ``files``, ``bytes``, ``small_files``,
    ``medium_files``, ``big_files``, ``dirs``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    rng = random.Random(seed)
    text = _Text(rng)
    stats = {"files": 0, "bytes": 0, "small_files": 0, "medium_files": 0, "big_files": 0,
             "dirs": 0, "scale": scale, "seed": seed}

    small = _scaled(SMALL_FILES, scale)
    for i in range(small):
        directory = root / "small" / f"d{i // SMALL_PER_DIR:03d}"
        if i % SMALL_PER_DIR == 0:
            directory.mkdir(parents=True, exist_ok=True)
            stats["dirs"] += 1
        data = text.text(rng.randint(SMALL_MIN, SMALL_MAX))
        _write(directory / f"f{i:05d}.txt", data)
        stats["bytes"] += len(data)
    stats["small_files"] = small

    medium = _scaled(MEDIUM_FILES, scale)
    (root / "medium").mkdir()
    for i in range(medium):
        size = rng.randint(MEDIUM_MIN, MEDIUM_MAX)
        if i % 3 == 2:
            data = rng.randbytes(size)
            name = f"m{i:03d}.bin"
        else:
            data = text.text(size)
            name = f"m{i:03d}.txt"
        _write(root / "medium" / name, data)
        stats["bytes"] += len(data)
    stats["medium_files"] = medium

    big = _scaled(BIG_SIZE, scale, minimum=MIB)
    (root / "big").mkdir()
    _write_big(root / "big" / "image.img", big, rng.randbytes)
    counter = [0]

    def dump_piece(n: int) -> bytes:
        piece = text.text(n, numbered="INSERT INTO events VALUES", start=counter[0])
        counter[0] += n // 60
        return piece

    _write_big(root / "big" / "dump.sql", big, dump_piece)
    stats["bytes"] += 2 * big
    stats["big_files"] = 2
    stats["dirs"] += 3
    stats["files"] = small + medium + 2
    return stats


def _files(root: Path, sub: str) -> list[Path]:
    return sorted(p for p in (root / sub).rglob("*") if p.is_file())


def mutate(root: Path, seed: int = 2) -> dict:
    """Change about 1 % of the tree built by ``make_tree``; deterministic for a seed.

    Returns what was done: ``edited``, ``added``, ``deleted`` file counts and
    ``bytes_changed`` (bytes written or appended, a rough measure).
    """
    root = Path(root)
    rng = random.Random(seed)
    text = _Text(rng)
    changed = edited = added = deleted = 0

    small = _files(root, "small")
    n_edit = max(1, len(small) // 100)  # 1 % of the small files
    for path in rng.sample(small, min(n_edit, len(small))):
        data = path.read_bytes()
        cut = rng.randint(0, len(data))
        extra = text.text(rng.randint(40, 400))
        _write(path, data[:cut] + extra + data[cut:])
        changed += len(extra)
        edited += 1

    dump = root / "big" / "dump.sql"
    size = dump.stat().st_size
    piece = min(MIB, max(1, size // 40))
    with open(dump, "r+b") as handle:  # a few MiB rewritten in place
        for _ in range(3):
            offset = rng.randrange(0, max(1, size - piece))
            handle.seek(offset)
            handle.write(text.text(piece, numbered="UPDATE events SET", start=offset))
            changed += piece
    edited += 1

    medium = _files(root, "medium")
    grow = min(MIB, max(1, size // 128))
    for path in (rng.choice(medium), root / "big" / "image.img"):  # appends
        with open(path, "ab") as handle:
            handle.write(rng.randbytes(grow))
        changed += grow
        edited += 1

    n_new = max(1, len(small) // 400)  # new and deleted small files
    newdir = root / "small" / "new"
    newdir.mkdir(exist_ok=True)
    for i in range(n_new):
        data = text.text(rng.randint(SMALL_MIN, SMALL_MAX))
        _write(newdir / f"n{seed}-{i:04d}.txt", data)
        changed += len(data)
        added += 1
    victims = [p for p in small if p.exists()]
    for path in rng.sample(victims, min(n_new, len(victims))):
        path.unlink()
        deleted += 1
    new_medium = root / "medium" / f"new-{seed}.bin"
    data = rng.randbytes(min(MIB, max(1, size // 128)))
    _write(new_medium, data)
    changed += len(data)
    added += 1
    gone = rng.choice([p for p in medium if p.exists()])
    gone.unlink()
    deleted += 1
    return {"edited": edited, "added": added, "deleted": deleted, "bytes_changed": changed}


if __name__ == "__main__":  # python bench/dataset.py DIR [SCALE]
    import json
    import sys
    import time

    began = time.monotonic()
    result = make_tree(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
    result["seconds"] = round(time.monotonic() - began, 2)
    print(json.dumps(result))
