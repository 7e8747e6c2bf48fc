"""The snapshots of a run: each executable of ``snapshots.d`` streams into chunks."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable

from s3archive.archive.chunk_writer import ChunkWriter
from s3archive.archive.chunker import Chunker
from s3archive.archive.packer import ChunkId
from s3archive.archive.sources.pickers import executables
from s3archive.archive.sources.snapshotters import run_snapshotter
from s3archive.format.model import Snapshot, Warning_
from s3archive.progress import Progress

# a snapshot as run, and the chunks of its stream in order
PendingSnapshot = tuple[Snapshot, list[ChunkId]]


def run_snapshotters(snapshots_dir: Path, timeout: float, writer: ChunkWriter,
                     progress: Progress, warn: Callable[[Warning_], None]
                     ) -> list[PendingSnapshot]:
    """Run every snapshotter in name order; its stream's chunks go to ``writer``."""
    chunker = Chunker()
    snapshots: list[PendingSnapshot] = []
    for path in executables(snapshots_dir):
        chunks: list[ChunkId] = []

        def consume(reader: BinaryIO) -> int:
            total = 0
            for plain in chunker.stream(reader):
                chunks.append(writer.add(plain))
                total += len(plain)
                progress.read(len(plain))
            return total

        progress.phase(f"snapshot {path.name}")
        outcome = run_snapshotter(path, timeout, consume)
        if outcome.problem:
            warn(Warning_("snapshot", f"{path.name}: {outcome.problem}"))
        snapshot = Snapshot(
            name=outcome.name, status=outcome.status, exit_status=outcome.exit_status,
            size=sum(chunk.size for chunk in chunks), started=outcome.started,
            duration_s=outcome.duration_s, description=outcome.description,
            restore_through=outcome.restore_through)
        snapshots.append((snapshot, chunks))
    return snapshots
