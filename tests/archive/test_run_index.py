"""The run's chunk locations on disk: exact lookups, batches, a filter without false negatives."""

from __future__ import annotations

import hashlib
import random

import pytest

from s3archive.archive.packer import ChunkLocation
from s3archive.archive.run_index import DigestFilter, RunIndex
from s3archive.archive.sql_rows import GROUP_ROWS


def digest(n: int) -> str:
    return hashlib.sha256(b"%d" % n).hexdigest()


def at(n: int, pack: str = "data/aa/" + "a" * 64, offset: int | None = None) -> ChunkLocation:
    return ChunkLocation(digest(n), pack, n if offset is None else offset, 10 + n % 7, 20,
                         "zstd" if n % 2 else "raw")


@pytest.fixture
def index():
    index = RunIndex()
    yield index
    index.close()


def test_the_filter_never_forgets_and_rarely_imagines() -> None:
    digests = [digest(n) for n in range(12_000)]
    bloom = DigestFilter(capacity=1000)  # grows: layers of 1024, 2048, 4096 ...
    for d in digests:
        bloom.add(d)
    assert all(bloom.may_contain(d) for d in digests)
    imagined = sum(bloom.may_contain(digest(n)) for n in range(20_000, 30_000))
    assert imagined < 20, "about 0.1 per cent at most (four layers)"
    assert bloom.nbytes <= 16_000 * 4, "about 4 bytes a digest"


def test_locations_read_back_exactly_one_by_one_and_in_batches(index: RunIndex) -> None:
    other = "meta/bb/" + "b" * 64
    rows = [at(n, other if n % 3 == 0 else "data/aa/" + "a" * 64) for n in range(1300)]
    index.put(rows)
    assert len(index) == 1300
    assert index.get(digest(7)) == rows[7] and index.get(digest(9999)) is None
    wanted = [digest(n) for n in range(0, 2600, 2)]
    found = index.get_many(wanted)
    assert found == {r.hash: r for r in rows[::2]}
    assert sorted(index, key=lambda r: r.offset) == rows
    assert index.bytes_by_pack() == {
        other: sum(r.stored for r in rows if r.pack == other),
        "data/aa/" + "a" * 64: sum(r.stored for r in rows if r.pack != other)}
    assert sorted(r.offset for r in index.in_packs({other})) == list(range(0, 1300, 3))


def test_the_first_location_wins_unless_replaced(index: RunIndex) -> None:
    first, second = at(1, offset=100), at(1, "data/cc/" + "c" * 64, offset=200)
    index.put([first])
    index.put([second], replace=False)
    assert index.get(first.hash) == first
    index.put([second])
    assert index.get(first.hash) == second
    index.delete(first.hash)
    assert index.get(first.hash) is None


@pytest.mark.parametrize("count", [1, GROUP_ROWS, GROUP_ROWS + 1])
def test_of_a_digest_put_twice_in_one_batch_the_first_or_last_wins(index: RunIndex,
                                                                   count: int) -> None:
    """A batch goes in a group of rows a statement, in key order (sql_rows.py): of one
    digest twice, ``replace`` keeps the one later in the batch, else the earlier."""
    later = "data/cc/" + "c" * 64
    rows = [at(n) for n in range(count)] + [at(0, later, offset=999)]
    index.put(rows, replace=False)
    assert index.get(digest(0)) == rows[0]
    index.put(rows[1:] + [rows[0]], replace=False)  # (recorded already: kept)
    assert index.get(digest(0)) == rows[0]
    index.put(rows)
    assert index.get(digest(0)) == rows[-1]
    assert index.get_many([digest(n) for n in range(count)]) == \
        {r.hash: r for r in [rows[-1], *rows[1:count]]}
    assert len(index) == count


def test_keep_only_forgets_the_other_packs(index: RunIndex) -> None:
    packs = [f"meta/{i:02x}/" + f"{i:02x}" * 32 for i in range(4)]
    rng = random.Random(3)
    rows = [at(n, rng.choice(packs)) for n in range(400)]
    index.put(rows)
    index.keep_only({packs[0], packs[2]})
    assert sorted(index, key=lambda r: r.offset) == [r for r in rows
                                                     if r.pack in (packs[0], packs[2])]


def test_locations_are_copied_from_the_local_cache_in_sql(tmp_path) -> None:
    """put_listed_from_cache: the cache's locations of the digests of a packed chunk
    list (a file row's, split in SQL), in reusable packs only, each once however often
    listed, a location already recorded kept; the filter knows every one copied (as
    adding each would); the digests left unknown are returned."""
    from s3archive.archive.local_cache import CHUNK_ITEM, LocalCache

    def listed(digests: list[str]) -> bytes:
        return b"".join(CHUNK_ITEM.pack(bytes.fromhex(d), 7) for d in digests)

    cache = LocalCache(tmp_path / "c.sqlite")
    data = [at(n, pack=f"data/{n % 3:02x}/" + f"{n % 3:x}" * 64) for n in range(3000)]
    meta = [at(n, pack="meta/00/" + "0" * 64) for n in range(3000, 3100)]
    cache.add_chunks(data + meta)
    index = RunIndex()
    try:
        index.attach_cache(cache.path)
        mine = at(4, pack="data/ff/" + "f" * 64, offset=999)
        index.put([mine])
        asked = ([digest(n) for n in range(0, 3100, 2)] + [digest(n) for n in range(9000, 9010)]
                 + [digest(n) for n in range(0, 40, 4)])  # some twice
        random.Random(5).shuffle(asked)
        unknown = index.put_listed_from_cache(listed(asked), CHUNK_ITEM.size, ("data/",))
        assert unknown == ({digest(n) for n in range(3000, 3100, 2)}
                           | {digest(n) for n in range(9000, 9010)})
        assert index.get(digest(4)) == mine, "a location already recorded is kept"
        for n in range(0, 3000, 2):
            assert index.get(digest(n)) == (mine if n == 4 else data[n])
        assert index.get(digest(1)) is None and len(index) == 1500
        assert index.get_many([digest(2), digest(6)]) == {digest(2): data[2], digest(6): data[6]}
        assert sum(index.bytes_by_pack().values()) == sum(d.stored for d in data[::2]) \
            - data[4].stored + mine.stored
        added = RunIndex()
        added.put([mine])
        added._filter.add_many(asked)
        assert index._filter._layers == added._filter._layers, "the bits adding each sets"
        added.close()
        assert index.put_listed_from_cache(b"", CHUNK_ITEM.size, None) == set()
        assert index.put_listed_from_cache(listed([digest(3001)]), CHUNK_ITEM.size,
                                           None) == set(), "any pack: meta too"
        assert index.get(digest(3001)) == meta[1]
    finally:
        index.close()
        cache.close()


def test_adding_many_sets_the_bits_adding_each_does() -> None:
    digests = [digest(n) for n in range(5000)]
    one, many = DigestFilter(capacity=1000), DigestFilter(capacity=1000)
    for d in digests:
        one.add(d)
    many.add_many(digests[:10])
    many.add_many(digests[10:])
    assert one._layers == many._layers and one._count == many._count
    assert all(many.may_contain(d) for d in digests)


def test_a_pack_put_as_rows_reads_back_as_its_locations(index: RunIndex, tmp_path) -> None:
    """PackRows (a stored pack's locations split in SQL) records in the run index and
    the local cache exactly what putting them one by one records; a number too wide
    for its field is refused, never written truncated."""
    from s3archive.archive.local_cache import LocalCache
    from s3archive.archive.run_index import PackRows
    rng = random.Random(5)
    pack = "data/bb/" + "b" * 64
    locations = [ChunkLocation(digest(n), pack, rng.choice([0, 7, 16 << 20, 10 ** 12 - 1]),
                               rng.choice([0, 1, 10 ** 10 - 1]), rng.choice([0, 5, 10 ** 10 - 1]),
                               rng.choice(["zstd", "raw"])) for n in range(3000)]
    index.put([at(1)])  # another pack's, replaced by this one's
    rows = PackRows(pack, locations)
    assert len(rows.slices) == 2  # (a statement a slice)
    index.put_pack(rows)
    cache = LocalCache(tmp_path / "cache.db")
    cache.add_pack_rows(PackRows(pack, locations))
    assert len(index) == len(locations)
    assert index.get_many(digest(n) for n in range(3000)) == {c.hash: c for c in locations}
    assert cache.get_chunks([digest(n) for n in range(3000)]) == {c.hash: c for c in locations}
    assert all(index.may_contain(c.hash) for c in locations)
    for wide in (ChunkLocation(digest(1), pack, 10 ** 12, 1, 1, "raw"),
                 ChunkLocation(digest(1), pack, 0, 10 ** 10, 1, "raw"),
                 ChunkLocation(digest(1), pack, 0, 1, 10 ** 10, "raw")):
        with pytest.raises(ValueError):
            PackRows(pack, [wide])
    cache.close()
