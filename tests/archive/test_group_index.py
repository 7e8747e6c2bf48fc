"""Cross-host deduplication through the group index (docs/FORMAT.md part 2, 16).

Several hosts archive into one in-memory Object Lock store with the real
``Archiver``; each sees the store as its backup role would (no deletes, no
reads of ``data/``), and its list requests are recorded by prefix.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import zstandard

from s3archive.archive.archiver import ArchiveSummary, Archiver
from s3archive.archive.group_index import INDEX_PREFIX
from s3archive.config import Config, parse_config
from s3archive.errors import ConfigError, StoreError
from s3archive.store.base import ObjectLock
from support.fleet_hosts import HostView
from support.memory_store import FakeClock, MemoryStore
from support.runs import read_run

DAY = timedelta(days=1)
START = datetime(2031, 11, 24, 3, 15, tzinfo=timezone.utc)


@dataclass
class Fleet:
    root: Path
    clock: FakeClock = field(default_factory=lambda: FakeClock(START))
    store: MemoryStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = MemoryStore(self.clock, bucket="fleet-bucket")

    def host(self, name: str, tree: Path, **extra: Any) -> "Host":
        etc = self.root / name / "etc"
        (etc / "pickers.d").mkdir(parents=True)
        (etc / "snapshots.d").mkdir()
        picker = etc / "pickers.d" / "10-tree"
        picker.write_text(f"#!/bin/sh\necho '{tree}'\n")
        picker.chmod(0o755)
        document = {
            "s3": {"bucket": "fleet-bucket"}, "host": {"name": name},
            "retention": {"daily_days": 10, "weekly_days": 10, "monthly_days": 10,
                          "yearly_days": 10, "slack_days": 2},
            "content": {"pack_size_mib": 1},
            "local": {"cache_dir": str(self.root / name / "cache"),
                      "state_file": str(self.root / name / "state.json")},
            **extra,
        }
        config = parse_config(document, etc / "config.toml", clock=self.clock)
        return Host(self, name, config, HostView(self.store))

    def bytes_in(self, prefix: str) -> int:
        return sum(v.size for v in self.store.versions(prefix) if not v.is_delete_marker)


@dataclass
class Host:
    fleet: Fleet
    name: str
    config: Config
    view: HostView

    def run(self) -> ArchiveSummary:
        summary = Archiver(self.config, self.view, clock=self.fleet.clock).run()
        assert summary.exit_code == 0, summary.warnings
        return summary


def tree_of(root: Path, rng: random.Random, files: int, size: int = 20_000) -> Path:
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"f{i:04d}.bin").write_bytes(rng.randbytes(size))
    return root


def restores(fleet: Fleet, summary: ArchiveSummary, tree: Path) -> None:
    """Every file of the run reads back from the pinned versions (the restore role)."""
    from s3archive.format.chunk_codec import decode_chunk
    from s3archive.format.model import FILE
    key = summary.manifest_key
    assert key is not None
    manifest = read_run(fleet.store, key, fleet.store.get(key))
    files = {e.path: e for e in manifest.entries if e.kind == FILE}
    assert len(files) == sum(1 for _ in tree.iterdir())
    for path, entry in files.items():
        data = b"".join(decode_chunk(fleet.store.get(manifest.packs[c.pack].key,
                                                     manifest.packs[c.pack].version_id,
                                                     (c.offset, c.offset + c.stored - 1)),
                                     c.encoding, c.size, c.hash) for c in entry.chunks)
        assert data == Path(path.decode()).read_bytes()


def test_a_second_host_with_the_same_tree_uploads_under_one_percent(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    rng = random.Random(13)
    tree = tree_of(tmp_path / "tree", rng, 150)
    web1, web2 = fleet.host("web1", tree), fleet.host("web2", tree)
    first = web1.run()
    fleet.clock.advance(timedelta(hours=1))
    second = web2.run()
    assert first.bytes_uploaded > 3_000_000
    assert second.bytes_uploaded < 0.01 * first.bytes_uploaded, (second, first)
    assert second.chunks_new == 0 and second.chunks_reused == first.chunks_new
    restores(fleet, second, tree)
    # web2's run references web1's data pack and has leased it: the lock covers its run
    manifest = read_run(fleet.store, second.manifest_key, fleet.store.get(second.manifest_key))
    for pack in manifest.packs:
        stored = fleet.store.version(pack.key, pack.version_id)
        assert stored.retain_until >= manifest.header.retain_until
    # an index object for web1's run, under the default group; web2 uploaded no data
    # and extended no lock: it writes none
    (index,) = [v.key for v in fleet.store.versions(INDEX_PREFIX)]
    assert index.startswith("index/plain-all/20311124/20311124T") and \
        index.endswith(f"-web1-{first.run_id}-p0.idx"), index


@pytest.mark.parametrize("own_files, lowest, highest", [
    # issue 13: 90 % of the fleet's bytes are duplicates: each host is ~99 % the image
    # and ~1 % its own; ten hosts hold 1 + 9 x 0.01 = 1.09 units of distinct content
    (1, 1.07, 1.11),
    # each host 10 % its own: 1 + 9 x 0.1 = 1.9 units, the optimum (not 10x)
    (10, 1.85, 1.95),
])
def test_ten_hosts_store_their_distinct_content_once(tmp_path: Path, own_files: int,
                                                     lowest: float, highest: float) -> None:
    fleet = Fleet(tmp_path)
    rng = random.Random(17)
    shared = [rng.randbytes(20_000) for _ in range(100 - own_files)]
    hosts = []
    for n in range(10):
        tree = tmp_path / f"tree{n}"
        tree.mkdir()
        for i, data in enumerate(shared):
            (tree / f"s{i:03d}.bin").write_bytes(data)
        for i in range(own_files):
            (tree / f"own{i:03d}.bin").write_bytes(rng.randbytes(20_000))
        hosts.append((fleet.host(f"h{n}", tree), tree))
    uploaded = []
    for host, _ in hosts:
        uploaded.append(host.run().bytes_uploaded)
        fleet.clock.advance(timedelta(minutes=20))
    one_host = _data_bytes_of_first(fleet)
    # each further host uploads its own share and its metadata, nothing of the image
    own = own_files / 100
    assert all(u < (own + 0.01) * uploaded[0] for u in uploaded[1:]), uploaded
    ratio = fleet.bytes_in("data/") / one_host
    assert lowest <= ratio <= highest, (ratio, uploaded)
    # everything the fleet stores (data, metadata, roots, group index) against what
    # one host alone stores: the distinct content, and each further host's metadata
    # (its own trees: under 1 % of a host; 0.4 % here)
    everything = sum(fleet.bytes_in(p) for p in ("data/", "meta/", "runs/", INDEX_PREFIX))
    assert fleet.bytes_in("") == everything
    assert everything / uploaded[0] <= ratio + 9 * 0.01, (everything, uploaded)
    host, tree = hosts[-1]
    restores(fleet, host.run(), tree)


def _data_bytes_of_first(fleet: Fleet) -> int:
    """The data bytes one host alone stores: the packs of the first run."""
    first = min((v for v in fleet.store.versions("runs/")), key=lambda v: v.last_modified)
    manifest = read_run(fleet.store, first.key, fleet.store.get(first.key, first.version_id))
    return sum(p.size for p in manifest.packs if p.key.startswith("data/"))


def test_daily_runs_list_the_group_index_a_constant_number_of_times(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    rng = random.Random(5)
    hosts = [fleet.host(f"h{n:02d}", tree_of(tmp_path / f"t{n}", rng, 2, 2_000))
             for n in range(12)]
    for day in range(3):
        for host in hosts:
            host.view.lists.clear()
            host.run()
            index_lists = [p for p in host.view.lists if p.startswith(INDEX_PREFIX)]
            if day == 0 and host is hosts[0]:
                assert index_lists == ["index/plain-all/"]  # the bootstrap
            elif day > 0:
                assert len(index_lists) <= 2, index_lists  # yesterday and today
            assert all(not p.startswith(("data/", "meta/", "runs/h")) or
                       p.startswith(f"runs/{host.name}/") for p in host.view.lists), \
                host.view.lists
            fleet.clock.advance(timedelta(minutes=5))
        fleet.clock.advance(DAY - timedelta(minutes=60))
        fleet.store.lifecycle_day()


def test_a_refused_lease_on_another_hosts_pack_writes_the_chunks_anew(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    rng = random.Random(23)
    tree = tree_of(tmp_path / "tree", rng, 20)
    web1 = fleet.host("web1", tree)
    first = web1.run()
    # web2 keeps its runs longer: it must extend web1's pack, and the store refuses
    web2 = fleet.host("web2", tree, retention={"daily_days": 40, "weekly_days": 40,
                                               "monthly_days": 40, "yearly_days": 40,
                                               "slack_days": 2})
    web2.view.refuse = {v.key for v in fleet.store.versions("data/")}
    second = web2.run()
    assert second.chunks_reused >= 20 and second.packs_rewritten == 1, second
    manifest = read_run(fleet.store, second.manifest_key, fleet.store.get(second.manifest_key))
    assert not {p.key for p in manifest.packs} & web2.view.refuse
    restores(fleet, second, tree)
    assert first.bytes_uploaded > 0


def test_a_pack_that_vanished_is_not_referenced(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    rng = random.Random(29)
    tree = tree_of(tmp_path / "tree", rng, 10)
    fleet.host("web1", tree).run()
    web2 = fleet.host("web2", tree, retention={"daily_days": 40, "weekly_days": 40,
                                               "monthly_days": 40, "yearly_days": 40,
                                               "slack_days": 2})
    # the pack web1 uploaded is gone by the time web2 leases it
    (data,) = [v for v in fleet.store.versions("data/")]
    real = web2.view.extend_retention

    def gone(key: str, version_id: str, lock: ObjectLock) -> None:
        if key == data.key:
            from s3archive.errors import NoSuchVersion
            raise NoSuchVersion(f"PutObjectRetention {key}: NoSuchVersion")
        real(key, version_id, lock)

    web2.view.extend_retention = gone  # type: ignore[method-assign]
    second = web2.run()
    manifest = read_run(fleet.store, second.manifest_key, fleet.store.get(second.manifest_key))
    assert data.key not in {p.key for p in manifest.packs}
    assert second.chunks_new == 10
    restores(fleet, second, tree)


class Warnings(logging.Handler):
    """The s3archive loggers' warnings, whatever the CLI's logging setup did to
    propagation in this process (caplog listens at the root)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> "Warnings":
        logging.getLogger("s3archive").addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger("s3archive").removeHandler(self)


def test_a_malformed_index_object_is_skipped_whole_and_named(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    rng = random.Random(31)
    tree = tree_of(tmp_path / "tree", rng, 5)
    fleet.host("web1", tree).run()
    (index,) = fleet.store.versions(INDEX_PREFIX)
    lines = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(index.body)).read().splitlines()
    # a poisoned copy: one blob line placed past its pack's end
    bad = [json.loads(line) for line in lines]
    blob = next(i for i, line in enumerate(bad) if isinstance(line, list) and line[0] == "B")
    bad[blob][3] = 10 ** 9
    body = zstandard.ZstdCompressor().compress(b"".join(json.dumps(x).encode() + b"\n" for x in bad))
    evil = index.key.replace("web1", "evil1")
    fleet.store.put(evil, body, None)
    fleet.store.put(index.key.rsplit("/", 1)[0] + "/junk-p0.idx", b"not zstd", None)
    web2 = fleet.host("web2", tree, dedup={"group": "all"})
    with Warnings() as warned:
        second = web2.run()
    assert f"group index object {evil} is unusable" in warned.text
    assert "junk-p0.idx is unusable" in warned.text
    assert second.chunks_new == 0  # web1's own index was learned
    restores(fleet, second, tree)


def test_groups_none_and_separate_groups_share_nothing(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    rng = random.Random(37)
    tree = tree_of(tmp_path / "tree", rng, 10)
    fleet.host("web1", tree, dedup={"group": "web"}).run()
    alone = fleet.host("db1", tree, dedup={"group": "none"})
    other = fleet.host("db2", tree, dedup={"group": "db"})
    assert alone.run().chunks_new == 10
    assert not [p for p in alone.view.lists if p.startswith(INDEX_PREFIX)]
    assert other.run().chunks_new == 10
    assert fleet.host("web2", tree, dedup={"group": "web"}).run().chunks_new == 0
    groups = sorted({v.key.split("/")[1] for v in fleet.store.versions(INDEX_PREFIX)})
    assert groups == ["plain-db", "plain-web"]


@pytest.mark.parametrize("value,problem", [("a b", "must be 1-64 characters"),
                                           (3, "must be a string or true or false"),
                                           ("x" * 65, "must be 1-64 characters")])
def test_a_bad_group_name_is_one_line(tmp_path: Path, value: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config({"s3": {"bucket": "bucket-1"}, "dedup": {"group": value}}, tmp_path / "c.toml")
    assert parse_config({"s3": {"bucket": "bucket-1"}, "dedup": {"group": False}},
                        tmp_path / "c.toml").dedup_group is None
    assert parse_config({"s3": {"bucket": "bucket-1"}}, tmp_path / "c.toml").dedup_group == "all"


def _encrypting(tmp_path: Path) -> tuple[Any, Any, dict[str, Any]]:
    """A restore identity, a group's dedup secret (written 0600 to ``tmp_path``) and the
    ``[encryption]`` section of the hosts that share it."""
    from s3archive.config import dedup_secret_file_text
    from s3archive.crypto.dedup import DedupSecret
    from s3archive.crypto.keys import Identity

    identity, secret = Identity.generate(), DedupSecret.generate()
    secret_file = tmp_path / "dedup.key"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(dedup_secret_file_text(secret))
    return identity, secret, {"encryption": {"recipients": [str(identity.recipient())],
                                             "dedup_secret_file": str(secret_file)}}


def test_a_compromised_member_corrupts_what_others_reference_and_verify_names_it(
        tmp_path: Path) -> None:
    """Issue 13 item 3: a member of an encrypted group (it holds the dedup secret) plants
    an index object placing the keyed id of a victim's chunk at the bytes of its own
    blob.  The victim's run references them; ``verify --read-data`` with the restore
    key names the blob, the pack, the host's run and the path; the liar's run is whole."""
    from s3archive.archive.group_index import GroupIndex
    from s3archive.repo.catalog import list_runs
    from s3archive.verify import Verifier, VerifyOptions

    fleet = Fleet(tmp_path)
    identity, secret, encryption = _encrypting(tmp_path)
    rng = random.Random(41)
    evil_tree = tree_of(tmp_path / "evil-tree", rng, 1, 5_000)
    victim_tree = tree_of(tmp_path / "victim-tree", random.Random(43), 2, 5_000)
    evil = fleet.host("evil", evil_tree, **encryption)
    evil.run()
    # the liar rewrites its own index: its blob now claims the victim's file's keyed id
    group = GroupIndex(fleet.store, f"sealed-{secret.dedup_id}", "evil", secret)
    (own,) = fleet.store.versions(INDEX_PREFIX)
    plain = group._open(own.key, own.body)
    lines = [json.loads(line) for line in
             zstandard.ZstdDecompressor().stream_reader(io.BytesIO(plain)).read().splitlines()]
    wanted = secret.blob_id(b"D", (victim_tree / "f0000.bin").read_bytes()).hex()
    (blob,) = [line for line in lines if isinstance(line, list) and line[0] == "B"]
    blob[2], blob[5] = wanted, 5_000
    forged = zstandard.ZstdCompressor().compress(
        b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    key = own.key.replace("-p0.idx", "-p1.idx")
    fleet.store.put(key, group._seal(key, forged), None)

    victim = fleet.host("victim", victim_tree, **encryption)
    summary = victim.run()
    assert summary.chunks_reused >= 1  # the planted claim was believed
    verifier = Verifier(fleet.store, VerifyOptions(read_data=True, identities=(identity,)))
    results = {run.host: verifier.verify(run) for run in list_runs(fleet.store)}
    # the liar's run is whole, but the object it planted under its run's name is named
    assert [(p.kind, p.key) for p in results["evil"].problems] == [("group-index", key)], \
        results["evil"].problems
    problems = results["victim"].problems
    assert [p.kind for p in problems] == ["chunk"], problems
    assert problems[0].key is not None and problems[0].key.startswith("data/")
    assert problems[0].paths == [os.fsencode(victim_tree / "f0000.bin")]


def _rewrite_index(fleet: Fleet, change: Any) -> str:
    """Rewrite the only group index object (plain) through ``change(lines)``, in place
    (a new version of the same key, as a member with the backup role can PUT)."""
    (own,) = fleet.store.versions(INDEX_PREFIX)
    lines = [json.loads(line) for line in
             zstandard.ZstdDecompressor().stream_reader(io.BytesIO(own.body)).read().splitlines()]
    change(lines)
    fleet.store.put(own.key, zstandard.ZstdCompressor().compress(
        b"".join(json.dumps(x).encode() + b"\n" for x in lines)), None)
    return own.key


def _lines_of(kind: str, lines: list[Any]) -> list[Any]:
    return [line for line in lines if isinstance(line, list) and line[0] == kind]


def _claim_later_lock(lines: list[Any]) -> None:
    _lines_of("P", lines)[0][6] = "2099-01-01T00:00:00Z"


def _name_another_version(lines: list[Any]) -> None:
    _lines_of("P", lines)[0][3] = "someone-elses-version"


def _move_a_blob(lines: list[Any]) -> None:
    blobs = _lines_of("B", lines)
    blobs[0][2], blobs[1][2] = blobs[1][2], blobs[0][2]  # two ids swapped: both lie


def _another_run(lines: list[Any]) -> None:
    lines[0]["run_id"] = "20311124T000000Z-abcdef"


@pytest.mark.parametrize("change, read_data, named", [
    (_claim_later_lock, False, "claims pack data/"),
    (_name_another_version, False, "which its run does not reference"),
    (_another_run, False, "its header says run_id"),
    (_move_a_blob, True, "2 of its 3 blobs are not what it says"),
])
def test_verify_names_a_lie_in_a_hosts_group_index_object(
        tmp_path: Path, change: Any, read_data: bool, named: str) -> None:
    """Issue 13 item 3: verify checks the group index objects each run wrote: the packs
    they name are the run's with the locks they hold, and (--read-data) each blob is
    what it says; each lie is named by its object."""
    from s3archive.repo.catalog import list_runs
    from s3archive.verify import Verifier, VerifyOptions

    fleet = Fleet(tmp_path)
    fleet.host("web1", tree_of(tmp_path / "tree", random.Random(47), 3)).run()
    (run,) = list_runs(fleet.store)
    assert Verifier(fleet.store, VerifyOptions(read_data=True)).verify(run).ok
    key = _rewrite_index(fleet, change)
    problems = Verifier(fleet.store, VerifyOptions(read_data=read_data)).verify(run).problems
    assert [(p.kind, p.key) for p in problems] == [("group-index", key)], problems
    assert named in problems[0].message, problems[0].message


def test_another_hosts_pack_about_to_lapse_is_not_reused(tmp_path: Path) -> None:
    """A pack whose known lock ends within REUSE_MARGIN is forgotten before the walk:
    lifecycle may remove it before the run could extend it."""
    from s3archive.archive.retention import REUSE_MARGIN

    fleet = Fleet(tmp_path)
    tree = tree_of(tmp_path / "tree", random.Random(47), 4)
    web1 = fleet.host("web1", tree, retention={"daily_days": 1, "weekly_days": 1,
                                               "monthly_days": 1, "yearly_days": 1,
                                               "slack_days": 0})
    web1.run()
    (pack,) = fleet.store.versions("data/")
    fleet.clock.advance(pack.retain_until - fleet.clock() - REUSE_MARGIN / 2)
    second = fleet.host("web2", tree).run()
    assert second.chunks_new == 4 and second.packs_extended == 0
    manifest = read_run(fleet.store, second.manifest_key, fleet.store.get(second.manifest_key))
    assert pack.key not in {p.key for p in manifest.packs}


def test_encrypted_hosts_sharing_a_dedup_secret_upload_once(tmp_path: Path) -> None:
    """An encrypted group: the index is sealed (no id, key or size readable without the
    secret), a second host uploads no data, and its run verifies with the restore key."""
    from s3archive.repo.catalog import list_runs
    from s3archive.verify import Verifier, VerifyOptions

    fleet = Fleet(tmp_path)
    identity, secret, encryption = _encrypting(tmp_path)
    tree = tree_of(tmp_path / "tree", random.Random(53), 30)
    first = fleet.host("web1", tree, **encryption).run()
    (index,) = fleet.store.versions(INDEX_PREFIX)
    assert index.key.startswith(f"index/sealed-{secret.dedup_id}/")
    with pytest.raises(zstandard.ZstdError):  # sealed: not even a zstd frame
        zstandard.ZstdDecompressor().decompress(index.body)
    second = fleet.host("web2", tree, **encryption).run()
    assert second.chunks_new == 0 and second.bytes_uploaded < 0.01 * first.bytes_uploaded
    verifier = Verifier(fleet.store, VerifyOptions(read_data=True, identities=(identity,)))
    for run in list_runs(fleet.store):
        result = verifier.verify(run)
        assert result.ok and result.chunks_checked >= 30, result.problems


def test_a_backup_policy_without_the_index_costs_dedup_not_the_run(tmp_path: Path) -> None:
    """A bucket set up before the group index: listing and writing index/ are refused;
    the run completes (warning once each), deduplicating against its own data."""
    fleet = Fleet(tmp_path)
    tree = tree_of(tmp_path / "tree", random.Random(59), 3)
    host = fleet.host("web1", tree)

    def refused(prefix: str):  # type: ignore[no-untyped-def]
        if prefix.startswith(INDEX_PREFIX):
            raise StoreError(f"ListObjectsV2 {prefix}: AccessDenied")
        return fleet.store.list_keys(prefix)

    real_put = fleet.store.put

    def put(key: str, body: bytes, lock: ObjectLock | None, legal_hold: bool = False):  # type: ignore[no-untyped-def]
        if key.startswith(INDEX_PREFIX):
            raise StoreError(f"PUT {key}: AccessDenied")
        return real_put(key, body, lock, legal_hold)

    host.view.list_keys = refused  # type: ignore[method-assign]
    fleet.store.put = put  # type: ignore[method-assign]
    with Warnings() as warned:
        summary = host.run()
    assert summary.manifest_key is not None and summary.chunks_new == 3
    assert "cannot read the group index index/plain-all/" in warned.text
    assert "could not write the group index of this run" in warned.text


@pytest.mark.parametrize("block", [1 << 20, 97, 1])
def test_blob_lines_are_the_lines_an_encoding_of_each_row_gives(
        block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The B lines are cut from the spooled lines, not encoded again: byte for byte
    what ``_line(["B", N, ...])`` gives; a pack not listed gives none; a pack added
    twice gives both its lists, in the order added; every block is whole lines, also
    when a block read is shorter than a line (``block``)."""
    from s3archive.archive import group_index
    from s3archive.archive.group_index import UploadedBlobs, _line
    from s3archive.archive.packer import ChunkLocation

    monkeypatch.setattr(group_index, "_SPOOL_BLOCK", block)
    rng = random.Random(16)
    uploaded = UploadedBlobs()
    packs = [f"data/{n:02x}/{rng.randbytes(16).hex()}" for n in range(3)]
    rows = {pack: [ChunkLocation(rng.randbytes(32).hex(), pack, rng.randrange(1 << 30),
                                 rng.randrange(1, 1 << 23), rng.randrange(0, 1 << 23),
                                 rng.choice(["zstd", "raw"])) for _ in range(50)]
            for pack in packs}
    added = [(pack, rows[pack]) for pack in packs] + [(packs[0], rows[packs[0]][:7])]
    for pack, listed in added:
        uploaded.add(pack, listed)
    numbers = {packs[0]: 0, packs[2]: 7}
    expected = [_line(["B", numbers[r.pack], r.hash, r.offset, r.stored, r.size, r.encoding])
                for pack, listed in added if pack in numbers for r in listed]
    blocks = list(uploaded.blob_blocks(numbers))
    assert b"".join(blocks) == b"".join(expected)
    assert all(b.endswith(b"\n") for b in blocks)
    for bad in ('data/"x', "data/a\\b", "data/\u00e9", "data/a\nb"):
        with pytest.raises(ValueError):
            uploaded.add(bad, rows[packs[0]])
    uploaded.close()


def test_spooled_blob_lines_are_the_json_of_each_blob() -> None:
    """UploadedBlobs writes the usual row's line directly: the bytes json.dumps gives,
    which blob_blocks cuts at the pack key's quote."""
    from s3archive.archive.group_index import UploadedBlobs
    from s3archive.archive.packer import ChunkLocation

    rng = random.Random(21)
    rows = [ChunkLocation(rng.randbytes(32).hex(), "data/p1", rng.randrange(1 << 40),
                          rng.randrange(1, 1 << 23), rng.randrange(1 << 23),
                          rng.choice(["zstd", "raw"])) for _ in range(50)]
    rows += [ChunkLocation("caf\u00e9", "data/p1", 1, 2, 3, "raw"),  # (never written: as json)
             ChunkLocation("ab", "data/p1", True, 2, 3, "zst\"d")]
    spooled = UploadedBlobs()
    spooled.add("data/p1", rows)
    assert b"".join(spooled.blob_blocks({"data/p1": 4})) == b"".join(
        json.dumps(["B", 4, r.hash, r.offset, r.stored, r.size, r.encoding],
                   separators=(",", ":")).encode() + b"\n" for r in rows)
