"""A content worker's cost per small file, by component (issue 10 item 4).

    python bench/bench_worker.py [--files 20000] [--per-dir 100] [--dir DIR] [--repeat 3]
                                 [--compare-code DIR]

Builds (or reuses, ``--dir``) a tree of small text files as ``bench_scale.py``
does, warms the page cache, then times in this process, in CPU seconds (best
of ``--repeat``), per file:

* ``worker loop``: :func:`content_workers.serve` over the files in batches of
  ``file_stage.BATCH_FILES`` (frames in from memory, results into a sink): all a
  worker does for a file but the pipe's system calls;
* its parts, each alone: the syscalls (open, fstat, listxattr, flock, pread,
  fstat, close), describing the entry (``describe_entry``) and its guard
  (``entry_problem``), reading (``read_whole``), SHA-256, zstd at the run's level,
  the line and row (``_finish``); and ``floor``: the syscalls, SHA-256, zstd and
  the line's bytes in straight-line Python, what no restructuring goes below;
* ``main side``: the main process's decoding of the results (``_read_frame`` and
  the ``BatchRead`` made of it), per file.

``--compare-code DIR`` runs the same in a second checkout (another branch), the
two alternated ``--repeat`` times, for an A/B under load.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(root: Path, repeat: int) -> dict[str, float]:
    """µs per file of each component over the files under ``root``."""
    import fcntl
    import pickle

    from s3archive.archive import content_workers as cw
    from s3archive.archive.chunker import Chunker
    from s3archive.archive.file_stage import BATCH_BYTES, BATCH_FILES
    from s3archive.archive.frame_blocks import FrameBlocks
    from s3archive.archive.local_cache import _PLAIN_LINE
    from s3archive.archive.sources.entries import describe_entry
    from s3archive.archive.sources.file_reader import read_whole
    from s3archive.format import manifest_codec
    from s3archive.format.chunk_codec import ChunkCodec, EncodedChunk, chunk_hash

    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(os.fsencode(root))
                   for name in names)
    stats = [os.lstat(path) for path in paths]
    walked = [(st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, 0) for st in stats]
    batches = [[(path, st.st_ino, st.st_ctime_ns, walk)
                for path, st, walk in zip(paths[i:i + BATCH_FILES], stats[i:i + BATCH_FILES],
                                          walked[i:i + BATCH_FILES])]
               for i in range(0, len(paths), BATCH_FILES)]
    datas = [Path(os.fsdecode(path)).read_bytes() for path in paths]
    settings = cw.WorkerSettings(3, 0.03, 2.0)
    frames_in = io.BytesIO()
    cw._write_frame(frames_in, settings)
    for batch in batches:
        cw._write_frame(frames_in, (BATCH_BYTES, batch))
    codec = ChunkCodec(settings.compression_level, settings.min_saving)
    chunker = Chunker()
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC

    def worker_loop() -> None:
        frames_in.seek(0)
        cw.serve(frames_in, io.BytesIO())

    def syscalls() -> None:
        for path in paths:
            fd = os.open(path, flags)
            before = os.fstat(fd)
            os.listxattr(fd)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            os.pread(fd, before.st_size + 1, 0)
            os.fstat(fd)
            os.close(fd)

    def describe() -> None:
        for path, walk in zip(paths, walked):
            describe_entry(path, cw.Walked(*walk))

    entries = [describe_entry(path, cw.Walked(*walk))[0] for path, walk in zip(paths, walked)]

    def guard() -> None:
        for entry in entries:
            manifest_codec.entry_problem(entry)

    def read() -> None:
        for path, st in zip(paths, stats):
            read_whole(path, st.st_ino, st.st_ctime_ns, chunker,
                       lambda plain: ("0" * 64, len(plain)))

    def sha256() -> None:
        for data in datas:
            chunk_hash(data)

    def zstd() -> None:
        for data in datas:
            codec.encode(data, "0" * 64)

    reads = [read_whole(path, st.st_ino, st.st_ctime_ns, chunker,
                        lambda plain: (chunk_hash(plain), len(plain)))
             for path, st in zip(paths, stats)]

    def line_and_row() -> None:
        for path, entry, done in zip(paths, entries, reads):
            cw._finish(path, entry, done, [], True)

    def floor() -> None:
        compressor = codec._compressor()
        middle = b'"kind":"file","mode":"0644","uid":0,"gid":0,"user":"root","group":"root"'
        for batch in batches:
            files, pieces = [], []
            for path, _, _, _ in batch:
                fd = os.open(path, flags)
                before = os.fstat(fd)
                os.listxattr(fd)
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                data = os.pread(fd, before.st_size + 1, 0)
                after = os.fstat(fd)
                os.close(fd)
                digest = hashlib.sha256(data).hexdigest()
                pieces.append((digest, len(data), "zstd", compressor.compress(data)))
                line = _PLAIN_LINE % (path, middle, after.st_mtime_ns, after.st_size,
                                      after.st_ino, after.st_ctime_ns)
                files.append((True, len(data), len(data), [],
                              b"%s\t%s:%d\n" % (line, digest.encode(), len(data)), None))
            pickle.dumps((files, pieces), protocol=5)

    frames_in.seek(0)
    results = io.BytesIO()
    cw.serve(frames_in, results)
    frames_out = results.getvalue()

    def main_side() -> None:
        blocks = FrameBlocks(keep=3)
        stream = io.BufferedReader(io.BytesIO(frames_out))  # type: ignore[arg-type]
        for _ in batches:
            files, pieces = cw._read_frame(stream, blocks)  # type: ignore[misc]
            cw.BatchRead([cw.FileDone(ok, read, size, problems, spooled,
                                      None if row is None else cw.FileRow(*row),
                                      None if back is None else cw.HandedBack(*back))
                          for ok, read, size, problems, spooled, row, back in files],
                         [EncodedChunk(*piece) for piece in pieces])

    parts: dict[str, Callable[[], None]] = {
        "worker loop": worker_loop, "syscalls": syscalls, "describe": describe,
        "  of which the guard": guard, "read": read, "sha256": sha256, "zstd": zstd,
        "line and row": line_and_row, "floor": floor, "main side": main_side}
    out = {}
    for name, part in parts.items():
        best = float("inf")
        for _ in range(repeat):
            began = _cpu()
            part()
            best = min(best, _cpu() - began)
        out[name] = best / len(paths) * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--per-dir", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="a tree to reuse (made if absent)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare-code", type=Path, default=None, metavar="DIR")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        for name, us in measure(args.dir, args.repeat).items():
            print(f"{name}\t{us:.2f}")
        return
    with tempfile.TemporaryDirectory(prefix="s3archive-bench-worker-") as scratch:
        root = args.dir or Path(scratch) / "tree"
        if not root.exists() or not any(root.iterdir()):
            sys.path.insert(0, str(HERE))
            from bench_scale import make_many
            make_many(root, args.files, args.per_dir)
        for folder, _, names in os.walk(root):  # the page cache warm
            for name in names:
                Path(folder, name).read_bytes()
        codes = [HERE.parent] + ([args.compare_code.resolve()] if args.compare_code else [])
        table: dict[str, dict[Path, list[float]]] = {}
        print(f"load {os.getloadavg()[0]:.1f}; files under {root}", flush=True)
        for _ in range(args.repeat if args.compare_code else 1):
            for code in codes:
                env = dict(os.environ, PYTHONPATH=str(code))
                lines = subprocess.run(
                    [sys.executable, str(code / "bench" / "bench_worker.py")
                     if (code / "bench" / "bench_worker.py").exists() else str(__file__),
                     "--child", "--dir", str(root), "--repeat", str(args.repeat)],
                    env=env, check=True, capture_output=True, text=True).stdout.splitlines()
                for line in lines:
                    name, us = line.split("\t")
                    table.setdefault(name, {}).setdefault(code, []).append(float(us))
        print(f"{'µs per file':24s}" + "".join(f"{str(code)[-22:]:>24s}" for code in codes))
        for name, by_code in table.items():
            print(f"{name:24s}" + "".join(
                f"{min(by_code.get(code, [float('nan')])):24.2f}" for code in codes))
        print(f"load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
