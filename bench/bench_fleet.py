"""Fleet benchmark: hosts sharing one image, s3archive against restic.

    python bench/bench_fleet.py [--scale 0.1] [--hosts 2] [--shared 0.99] [--encrypt]
                                [--workdir DIR]

Builds the tree of ``bench/dataset.py`` once (the image every host has); then,
for each tool on its own fresh RGW (as ``bench_archive.py``), host 1 archives
it and hosts 2..N archive it into the same bucket (s3archive: the default
dedup group, docs/FORMAT.md part 2, 16; restic: one repository,
``--host hostN``, a fresh cache per host).

``--shared F`` (below 1) gives each host content of its own beside the image,
so that the image is the fraction F of each host's bytes: the files of a
tree of another seed, each cut to (1 - F) / F of its length (small files: one
in F / (1 - F) kept whole), so the host's own bytes compress as the image
does.  Ten hosts at ``--shared 0.99`` hold 1 + 9 x 0.01 = 1.09 units of
distinct content (issue 13: "ten hosts with 90 % shared content store about
1.1x one host's data"); at 0.9, 1.9 units.

Printed per run: bytes the tool reports uploading, bytes RGW received,
requests, CPU seconds and peak RSS of the process, the ratio of each later
host's upload to the first host's, and the bucket's stored bytes (every
object version) after the run.  Then the fleet's stored bytes against host
1's, beside the ideal (distinct raw bytes of the fleet over host 1's), with
PASS when s3archive stores at most 5 % above the ideal (metadata and pack
overhead).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from harness import (REPO, Restic, S3Archive, Step, fresh_cluster as _fresh_cluster,
                     log as _log, measure, prepare, warm_page_cache)
from dataset import make_tree


def own_tree(root: Path, scale: float, seed: int, fraction: float) -> int:
    """A host's own content, ``fraction`` of the image's bytes in the image's mix (see the
    module's text); returns its bytes."""
    make_tree(root, scale, seed)
    keep_every = max(1, round(1 / fraction))
    total = 0
    for number, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
        if path.parts[-3:-2] == ("small",):
            if number % keep_every:
                path.unlink()
                continue
        else:
            with open(path, "r+b") as handle:
                handle.truncate(max(1, int(path.stat().st_size * fraction)))
        total += path.stat().st_size
    return total


def compressed_bytes(root: Path) -> int:
    """The bytes of the files under ``root`` each compressed with zstd (level 3, as
    s3archive's default): what their content stores, near enough, whatever its mix."""
    import zstandard
    compressor = zstandard.ZstdCompressor(level=3)
    return sum(min(len(compressor.compress(path.read_bytes())), path.stat().st_size)
               for path in root.rglob("*") if path.is_file())


def bucket_bytes(cluster: Any, bucket: str) -> tuple[int, int]:
    """Bytes of every object version in the bucket, and of those under ``data/``
    (s3archive: file content only, docs/FORMAT.md part 2; restic: every pack)."""
    total = data = 0
    for page in cluster.client().get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            total += version["Size"]
            data += version["Size"] if version["Key"].startswith("data/") else 0
    return total, data


class FleetHost(S3Archive):
    """Another host of the first one's bucket: its own name and cache, same bucket."""

    def __init__(self, first: S3Archive, workdir: Path, name: str):
        self.bucket = first.bucket
        self.name = name
        self.cluster = first.cluster
        self.env = first.env
        self.key_args = first.key_args
        self.home = workdir / name
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        shutil.copytree(first.home / "pickers.d", self.home / "pickers.d")
        text = first.config.read_text().replace('name = "bench"', f'name = "{name}"')
        text = text.replace(str(first.home / "cache"), str(self.home / "cache"))
        text = text.replace(str(first.home / "state"), str(self.home / "state"))
        self.config = self.home / "config.toml"
        self.config.write_text(text)


def add_own_picker(host: S3Archive, own: Path) -> None:
    picker = host.home / "pickers.d" / "20-own"
    picker.write_text(f"#!/bin/sh\necho '{own}'\n")
    picker.chmod(0o755)


class ResticHost:
    def __init__(self, first: Restic, workdir: Path, name: str, own: Path | None = None):
        self.first, self.name, self.own = first, name, own
        self.cluster, self.bucket = first.cluster, first.bucket
        self.cache = workdir / f"restic-cache-{name}"

    def run(self, step: str, logdir: Path) -> Step:
        first = self.first
        command = ["restic", "-r", first.repo, "--cache-dir", str(self.cache), "backup",
                   "--json", "--host", self.name, str(first.tree)] + \
            ([str(self.own)] if self.own is not None else [])
        result, stdout = measure("restic", step, command, first.env, first.cluster, logdir)
        import json
        for line in stdout.splitlines():
            if '"summary"' in line:
                result.summary = json.loads(line)
        result.bytes_uploaded_tool = result.summary.get("data_added")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--shared", type=float, default=1.0,
                        help="the image's share of each host's bytes (below 1: each host "
                             "has content of its own too)")
    parser.add_argument("--encrypt", action="store_true")
    parser.add_argument("--no-restic", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.shared <= 1:
        parser.error("--shared must be above 0 and at most 1")
    workdir, temporary, use_restic = prepare(args, "s3archive-fleet-")
    if workdir is None:
        return 2
    logdir, tree = workdir / "logs", workdir / "tree"
    clusters = []
    rows: list[tuple[str, str, Step]] = []
    stored: dict[tuple[str, str], tuple[int, int]] = {}  # (everything, data/)
    try:
        dataset = make_tree(tree, args.scale, args.seed)
        _log(f"tree: {dataset['files']} files, {dataset['bytes'] / 1e6:.0f} MB")
        owns: list[Path | None] = [None] * args.hosts
        own_bytes = [0] * args.hosts
        own_stored = [0] * args.hosts  # compressed: own content compresses less than the image
        if args.shared < 1:
            for n in range(args.hosts):
                owns[n] = workdir / f"own{n + 1}"
                shutil.rmtree(owns[n], ignore_errors=True)  # type: ignore[arg-type]
                own_bytes[n] = own_tree(owns[n], args.scale, 1000 + n,  # type: ignore[arg-type]
                                        (1 - args.shared) / args.shared)
                own_stored[n] = compressed_bytes(owns[n])  # type: ignore[arg-type]
            image_stored = compressed_bytes(tree)
            _log(f"own content: {sum(own_bytes) / 1e6:.1f} MB over {args.hosts} hosts")
        cluster = _fresh_cluster(workdir, "s3archive", dataset["bytes"] + sum(own_bytes))
        clusters.append(cluster)
        first: Any = S3Archive(workdir, tree, cluster, encrypt=args.encrypt)
        hosts_s3: list[Any] = [first] + [FleetHost(first, workdir, f"bench{n}")
                                         for n in range(2, args.hosts + 1)]
        for host, own in zip(hosts_s3, owns):
            if own is not None:
                add_own_picker(host, own)
        fleets: list[tuple[str, list[Any]]] = [("s3archive", hosts_s3)]
        if use_restic:
            cluster = _fresh_cluster(workdir, "restic", dataset["bytes"] + sum(own_bytes))
            clusters.append(cluster)
            restic = Restic(workdir, tree, cluster)
            first_restic: Any = restic if owns[0] is None else \
                ResticHost(restic, workdir, "bench1", owns[0])
            fleets.append(("restic", [first_restic] + [
                ResticHost(restic, workdir, f"bench{n}", owns[n - 1])
                for n in range(2, args.hosts + 1)]))
        for number in range(args.hosts):  # interleaved: host n of each tool, then n + 1
            for tool, hosts in fleets:
                warm_page_cache(tree)
                step = f"host{number + 1}"
                result = hosts[number].run(step, logdir)
                stored[(tool, step)] = bucket_bytes(hosts[number].cluster,
                                                    hosts[number].bucket)
                rows.append((tool, step, result))
                _log(f"{tool} {step}: {result.bytes_uploaded_tool} bytes uploaded, "
                     f"{result.cpu_s:.2f}s CPU, {result.peak_rss_mib:.0f} MiB, "
                     f"bucket {stored[(tool, step)][0]:,} bytes")
    finally:
        for cluster in clusters:
            cluster.stop()
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nscale {args.scale}: {dataset['files']} files, {dataset['bytes'] / 1e6:.0f} MB; "
          f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print(f"{'tool':10} {'host':6} {'uploaded':>12} {'rgw recv':>12} {'requests':>9} "
          f"{'cpu s':>7} {'rss MiB':>8} {'vs host1':>9} {'bucket':>12}")
    firsts = {tool: step_ for tool, name, step_ in rows if name == "host1"}
    for tool, name, result in rows:
        base = firsts[tool].bytes_uploaded_tool or 1
        ratio = (result.bytes_uploaded_tool or 0) / base
        print(f"{tool:10} {name:6} {result.bytes_uploaded_tool or 0:>12} "
              f"{result.bytes_received_rgw:>12} {result.requests_total_rgw:>9} "
              f"{result.cpu_s:>7.2f} {result.peak_rss_mib:>8.0f} {ratio:>9.4f} "
              f"{stored[(tool, name)][0]:>12}")
    raw = (dataset["bytes"] + sum(own_bytes)) / (dataset["bytes"] + own_bytes[0])
    ideal = 1.0 if args.shared == 1 else \
        (image_stored + sum(own_stored)) / (image_stored + own_stored[0])
    print(f"\n{args.hosts} hosts, image {args.shared:.0%} of each host: distinct content "
          f"{raw:.3f}x one host's raw bytes, {ideal:.3f}x compressed (zstd -3 per file: "
          f"the ideal)")
    last = f"host{args.hosts}"
    for tool, _ in fleets:
        (total_1, data_1), (total_n, data_n) = stored[(tool, "host1")], stored[(tool, last)]
        print(f"{tool:10} the fleet stores {total_n / total_1:.3f}x host 1's bucket bytes")
        if tool == "s3archive":
            # the content (data/) against the ideal; the rest is metadata: each host's own
            # trees (they carry its inodes and times), its run roots and group index
            verdict = "PASS" if data_n / data_1 <= 1.02 * ideal else "FAIL"
            metadata = ((total_n - data_n) - (total_1 - data_1)) / (args.hosts - 1 or 1)
            print(f"{'':10} content (data/) {data_n / data_1:.3f}x host 1's; target <= "
                  f"{1.02 * ideal:.3f}x (ideal + 2 % for pack overhead): {verdict}")
            print(f"{'':10} metadata of each further host: {metadata:,.0f} bytes, "
                  f"{metadata / total_1:.2%} of host 1's bucket bytes")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    time.sleep(0)
    sys.exit(main())
