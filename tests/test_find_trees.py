"""``find`` and ``history`` on format-2 runs (in-memory store): the answers of
reading every run whole, from a fraction of the nodes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3archive.config import parse_config
from s3archive.find import Hit, compile_pattern, find, history
from s3archive.repo.catalog import RunRef, load_manifest
from s3archive.repo.run_access import open_run
from s3archive.store.base import StoreReader
from support.memory_host import MemoryHost


class Host(MemoryHost):
    def __init__(self, root: Path):
        super().__init__(root, "find")

    def p(self, rest: str) -> bytes:
        return os.fsencode(self.tree) + rest.encode()


def opener(store: StoreReader):
    return lambda run, whole: open_run(store, run, whole_packs=whole)


def run_find(store: StoreReader, runs: list[RunRef], patterns: list[str]
             ) -> tuple[list[Hit], list[str]]:
    skipped: list[str] = []
    hits = find(runs, opener(store), patterns, lambda run, why: skipped.append(run.run_id))
    return hits, skipped


def read_whole(store: StoreReader, runs: list[RunRef], patterns: list[str]) -> list[Hit]:
    """What find answered when it read every run whole."""
    matchers = [compile_pattern(p) for p in patterns]
    return [Hit(run, e.path, e.kind, e.size, e.mtime_ns) for run in runs
            for e in load_manifest(store, run).entries if any(m(e.path) for m in matchers)]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    return Host(tmp_path_factory.mktemp("find"))


@pytest.fixture(scope="module")
def runs(host: Host) -> list[RunRef]:
    """Four runs, newest first: a few changes between them (built once: tests
    add no run but the last one, which names its runs)."""
    t = host.tree
    for d in range(6):
        (t / f"d{d}").mkdir()
        for i in range(300):
            (t / f"d{d}" / f"f{i:03d}.txt").write_text(f"{d}/{i}\n")
    (t / "etc/ssh").mkdir(parents=True)
    (t / "etc/ssh/sshd_config").write_text("Port 22\n")
    (t / "etc/hosts").write_text("127.0.0.1\n")
    (t / "etc/nginx.conf").write_text("v1\n")
    (t / os.fsdecode(b"caf\xe9.conf")).write_text("latin-1\n")
    made = [host.archive()]
    (t / "etc/nginx.conf").write_text("v2, longer\n")
    (t / "d3" / "f100.txt").unlink()
    made.append(host.archive())
    (t / "d5" / "new.conf").write_text("new\n")
    (t / "etc/ssh/sshd_config").unlink()
    made.append(host.archive())
    made.append(host.archive())  # unchanged
    return made[::-1]


@pytest.fixture(scope="module")
def whole_runs(host: Host, runs: list[RunRef]) -> dict[str, list]:
    """Each run's entries, read whole once."""
    return {run.run_id: load_manifest(host.store, run).entries for run in runs}


PATTERNS = [["*.conf"], ["f100.txt"], ["/**/ssh*"], ["etc/*"], ["d3/*.txt", "*.conf"],
            ["?"], ["*"], ["/"], ["**/sshd_config"], ["/**.conf"], ["caf\udce9*"], ["nothing"]]


@pytest.mark.parametrize("patterns", PATTERNS, ids=lambda p: "+".join(p))
def test_the_same_hits_as_reading_every_run_whole(host: Host, runs: list[RunRef],
                                                  whole_runs: dict[str, list],
                                                  patterns: list[str]) -> None:
    absolute = [p.replace("/**", os.fsdecode(host.tree) + "/**", 1) if p.startswith("/**")
                else p for p in patterns]
    hits, skipped = run_find(host.store, runs, absolute)
    assert skipped == []
    matchers = [compile_pattern(p) for p in absolute]
    assert hits == [Hit(run, e.path, e.kind, e.size, e.mtime_ns) for run in runs
                    for e in whole_runs[run.run_id] if any(m(e.path) for m in matchers)]


def test_anchored_patterns_read_only_their_prefix(host: Host, runs: list[RunRef]) -> None:
    wanted = os.fsdecode(host.p("/etc")) + "/*.conf"
    before = host.gets()
    hits, _ = run_find(host.store, runs, [wanted])
    gets = host.gets() - before
    assert [(h.run.run_id, h.path, h.size) for h in hits] == [
        (runs[0].run_id, host.p("/etc/nginx.conf"), 11),
        (runs[1].run_id, host.p("/etc/nginx.conf"), 11),
        (runs[2].run_id, host.p("/etc/nginx.conf"), 11),
        (runs[3].run_id, host.p("/etc/nginx.conf"), 3)]
    assert hits == read_whole(host.store, runs, [wanted])
    # per run its root object and run record; then one node per directory from /
    # to etc/ for each distinct version of the path (etc/ changed twice, the
    # fourth run is the third's): the six 300-file directories are never read
    directories = len(host.p("/etc").split(b"/"))
    assert gets <= 2 * len(runs) + 3 * directories, gets


def test_runs_sharing_a_directory_read_it_once(host: Host, runs: list[RunRef]) -> None:
    before = host.gets()
    run_find(host.store, runs, ["f1*.txt"])
    four = host.gets() - before
    before = host.gets()
    run_find(host.store, runs[:1], ["f1*.txt"])
    one = host.gets() - before
    # the newest run reads its metadata packs whole; each older run adds its root
    # object and record and the nodes that differ from the newer runs: those
    # from / to the tree (pytest's directories change beside it) and at most
    # three changed directories (etc, etc/ssh, d3 or d5) — not the six others
    to_tree = len(host.p("").split(b"/"))
    assert four <= one + 3 * 2 + 3 * (to_tree + 3), (one, four)


def test_a_damaged_node_skips_the_runs_that_share_it(host: Host, runs: list[RunRef]) -> None:
    # the metadata pack the second run wrote: its new nodes, which the newer runs share
    second = load_manifest(host.store, runs[2], part="root")
    first = load_manifest(host.store, runs[3], part="root")
    older = {p.key for p in first.packs}
    damaged = [p.key for p in second.packs if p.key.startswith("meta/") and p.key not in older]
    assert len(damaged) == 1

    class Damaging:
        def __getattr__(self, name):
            return getattr(host.store, name)

        def get(self, key, version_id=None, byte_range=None):
            body = host.store.get(key, version_id, byte_range)
            return bytes(b ^ 0xFF for b in body) if key == damaged[0] else body

    hits, skipped = run_find(Damaging(), runs, ["*.conf"])
    assert sorted(skipped) == sorted(r.run_id for r in runs[:3])
    assert {h.run.run_id for h in hits} == {runs[3].run_id}
    assert hits == read_whole(host.store, runs[3:], ["*.conf"])


def test_history_reads_a_node_only_where_the_path_changed(host: Host,
                                                          runs: list[RunRef]) -> None:
    oldest_first = runs[::-1]
    path = host.p("/etc/nginx.conf")
    before = host.gets()
    versions = history(oldest_first, opener(host.store), path, lambda run, why: None)
    gets = host.gets() - before
    assert [(v.entry is not None, v.changed) for v in versions] == [
        (True, False), (True, True), (True, False), (True, False)]
    assert versions[0].entry.size == 3 and versions[1].entry.size == 11
    # root object and record per run; the nodes on the path in the first run
    # and in the runs where etc/ changed; the unchanged last run reads none
    directories = len(path.split(b"/")) - 1
    assert gets <= 2 * len(runs) + 3 * directories, gets

    whole = [next((e for e in load_manifest(host.store, r).entries if e.path == path), None)
             for r in oldest_first]
    assert [(v.entry.size, v.entry.mtime_ns) for v in versions] == [
        (e.size, e.mtime_ns) for e in whole]


def test_history_of_a_removed_file_and_a_hardlink(host: Host, runs: list[RunRef]) -> None:
    oldest_first = runs[::-1]
    gone = history(oldest_first, opener(host.store), host.p("/etc/ssh/sshd_config"),
                   lambda run, why: None)
    assert [(v.entry is not None, v.changed) for v in gone] == [
        (True, False), (True, False), (False, True), (False, False)]
    os.link(host.tree / "etc/hosts", host.tree / "d0/hosts-link")
    newest = host.archive()
    linked = history([runs[0], newest], opener(host.store), host.p("/d0/hosts-link"),
                     lambda run, why: None)
    first_name = history([runs[0], newest], opener(host.store), host.p("/etc/hosts"),
                         lambda run, why: None)
    # d0/hosts-link comes first in path order: it holds the data, etc/hosts links to it
    assert linked[0].entry is None and linked[1].entry.kind == "file"
    assert [v.entry.kind for v in first_name] == ["file", "hardlink"]
    assert first_name[1].content == first_name[0].content == linked[1].content is not None
    assert not first_name[1].changed


def test_format_1_runs_beside_format_2(tmp_path: Path) -> None:
    host = Host(tmp_path)
    (host.tree / "etc").mkdir()
    (host.tree / "etc/a.conf").write_text("one\n")
    old = host.archive(storage_format=1)
    (host.tree / "etc/a.conf").write_text("two!\n")
    (host.tree / "etc/b.conf").write_text("new\n")
    new = host.archive()
    runs = [new, old]
    for patterns in (["*.conf"], [os.fsdecode(host.p("/etc/b*"))], ["/"]):
        hits, skipped = run_find(host.store, runs, patterns)
        assert skipped == [] and hits == read_whole(host.store, runs, patterns)
    versions = history([old, new], opener(host.store), host.p("/etc/a.conf"),
                       lambda run, why: None)
    assert [(v.entry.size, v.changed) for v in versions] == [(4, False), (5, True)]


def test_encrypted_runs_with_the_key(tmp_path: Path) -> None:
    """Keyed node ids are shared by a host's runs as plain ids are: find,
    history and diff read them with the restore key, as a whole read does."""
    from s3archive.browse import diff_manifests, diff_runs
    from s3archive.config import dedup_secret_file_text
    from s3archive.crypto.dedup import DedupSecret
    from s3archive.crypto.keys import Identity

    host = Host(tmp_path)
    identity, secret = Identity.generate(), DedupSecret.generate()
    secret_file = tmp_path / "dedup.key"
    secret_file.write_text(dedup_secret_file_text(secret))
    secret_file.chmod(0o600)
    host.config = parse_config(
        {"s3": {"bucket": "find"}, "host": {"name": "h"}, "content": {"pack_size_mib": 1},
         "local": {"cache_dir": str(tmp_path / "cache"), "state_file": str(tmp_path / "s.json")},
         "encryption": {"recipients": [str(identity.recipient())],
                        "dedup_secret_file": str(secret_file)}},
        tmp_path / "etc" / "config.toml", clock=host.clock)
    for d in range(3):
        (host.tree / f"d{d}").mkdir()
        for i in range(100):
            (host.tree / f"d{d}" / f"f{i}.conf").write_text(f"{d} {i}\n")
    first = host.archive()
    (host.tree / "d1" / "f7.conf").write_text("changed\n")
    second = host.archive()
    keys = [identity]

    def whole(run: RunRef):
        return load_manifest(host.store, run, identities=keys)

    def open_with_key(run: RunRef, whole_packs: bool):
        return open_run(host.store, run, whole_packs=whole_packs, identities=keys)

    runs = [second, first]
    hits = find(runs, open_with_key, ["f7.conf"], lambda run, why: pytest.fail(why))
    assert hits == [Hit(run, e.path, e.kind, e.size, e.mtime_ns) for run in runs
                    for e in whole(run).entries if e.path.endswith(b"/f7.conf")]
    assert len(hits) == 6
    versions = history([first, second], open_with_key, host.p("/d1/f7.conf"),
                       lambda run, why: pytest.fail(why))
    assert [v.changed for v in versions] == [False, True]
    changes = list(diff_runs(host.store, first, second, keys))
    assert changes == diff_manifests(whole(first), whole(second))
    assert host.p("/d1/f7.conf") in {c.path for c in changes}
