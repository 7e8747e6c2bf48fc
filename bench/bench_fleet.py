"""Fleet benchmark: a second host with the same tree, s3archive against restic.

    python bench/bench_fleet.py [--scale 0.1] [--hosts 2] [--encrypt] [--workdir DIR]

Builds the tree of ``bench/dataset.py`` once; then, for each tool on its own
fresh RGW (as ``bench_archive.py``), host 1 archives it and hosts 2..N archive
the same tree into the same bucket (s3archive: the default dedup group,
docs/FORMAT.md part 2, 16; restic: one repository, ``--host hostN``, a fresh
cache per host).  Printed per run: bytes the tool reports uploading, bytes
RGW received, requests, CPU seconds and peak RSS of the process; and the
ratio of each later host's upload to the first host's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench_archive import (REPO, Restic, S3Archive, Step, _fresh_cluster, _log, measure,
                           prepare, warm_page_cache)
from dataset import make_tree


class FleetHost(S3Archive):
    """Another host of the first one's bucket: its own name and cache, same bucket."""

    def __init__(self, first: S3Archive, workdir: Path, name: str):
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


class ResticHost:
    def __init__(self, first: Restic, workdir: Path, name: str):
        self.first, self.name = first, name
        self.cache = workdir / f"restic-cache-{name}"

    def run(self, step: str, logdir: Path) -> Step:
        first = self.first
        command = ["restic", "-r", first.repo, "--cache-dir", str(self.cache), "backup",
                   "--json", "--host", self.name, str(first.tree)]
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
    parser.add_argument("--encrypt", action="store_true")
    parser.add_argument("--no-restic", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    workdir, temporary, use_restic = prepare(args, "s3archive-fleet-")
    if workdir is None:
        return 2
    logdir, tree = workdir / "logs", workdir / "tree"
    clusters = []
    rows: list[tuple[str, str, Step]] = []
    try:
        dataset = make_tree(tree, args.scale, args.seed)
        _log(f"tree: {dataset['files']} files, {dataset['bytes'] / 1e6:.0f} MB")
        cluster = _fresh_cluster(workdir, "s3archive", dataset["bytes"])
        clusters.append(cluster)
        first: Any = S3Archive(workdir, tree, cluster, encrypt=args.encrypt)
        fleets: list[tuple[str, list[Any]]] = [
            ("s3archive", [first] + [FleetHost(first, workdir, f"bench{n}")
                                     for n in range(2, args.hosts + 1)])]
        if use_restic:
            cluster = _fresh_cluster(workdir, "restic", dataset["bytes"])
            clusters.append(cluster)
            restic = Restic(workdir, tree, cluster)
            fleets.append(("restic", [restic] + [ResticHost(restic, workdir, f"bench{n}")
                                                 for n in range(2, args.hosts + 1)]))
        for number in range(args.hosts):  # interleaved: host n of each tool, then n + 1
            for tool, hosts in fleets:
                warm_page_cache(tree)
                step = f"host{number + 1}"
                result = hosts[number].run(step, logdir)
                rows.append((tool, step, result))
                _log(f"{tool} {step}: {result.bytes_uploaded_tool} bytes uploaded, "
                     f"{result.cpu_s:.2f}s CPU, {result.peak_rss_mib:.0f} MiB")
    finally:
        for cluster in clusters:
            cluster.stop()
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nscale {args.scale}: {dataset['files']} files, {dataset['bytes'] / 1e6:.0f} MB; "
          f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print(f"{'tool':10} {'host':6} {'uploaded':>12} {'rgw recv':>12} {'requests':>9} "
          f"{'cpu s':>7} {'rss MiB':>8} {'vs host1':>9}")
    firsts = {tool: step_ for tool, name, step_ in rows if name == "host1"}
    for tool, name, result in rows:
        base = firsts[tool].bytes_uploaded_tool or 1
        ratio = (result.bytes_uploaded_tool or 0) / base
        print(f"{tool:10} {name:6} {result.bytes_uploaded_tool or 0:>12} "
              f"{result.bytes_received_rgw:>12} {result.requests_total_rgw:>9} "
              f"{result.cpu_s:>7.2f} {result.peak_rss_mib:>8.0f} {ratio:>9.4f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "bench"))
    time.sleep(0)
    sys.exit(main())
