"""The leaf decoder's two ways (format/tree_codec.py): the common entry decoded
directly (``_plain_entry``) and any entry by the format-1 line checks
(``_full_entry``).  They must agree: the direct way accepts nothing the full
checks refuse, and decodes what it accepts to the same entry.  Every field of
a file, a directory and a symlink is mutated (missing, null, each wrong type,
each bound and one past it) and both ways are compared."""

from __future__ import annotations

import copy
import hashlib
from typing import Any, Iterator

import pytest

from s3archive.errors import ManifestError
from s3archive.format import pack2
from s3archive.format import tree_codec as tc
from s3archive.format.limits import LIMITS, MAX_CHUNK_SIZE
from s3archive.format.manifest_codec import check_path
from s3archive.format.model import Entry, PackRef

INT64 = (1 << 63) - 1
UINT32 = (1 << 32) - 1
DATA = PackRef(0, pack2.pack_key("data", bytes(16)), "v0", 1 << 30)
META = PackRef(1, pack2.pack_key("meta", b"\1" * 16), "v1", 1 << 20)
OLD = PackRef(2, "packs/ab/" + "ab" * 32, "v2", 4 << 20)  # a format-1 pack key
SMALL = PackRef(3, pack2.pack_key("data", b"\3" * 16), "v3", 5000)
# a pack whose id names a smaller one in the run's table (a table is built so that
# never happens: the chunk checks of format 1 still hold a reference to it)
MISNAMED = PackRef(3, pack2.pack_key("data", b"\4" * 16), "v4", 1 << 20)
HASH = hashlib.sha256(b"x").hexdigest()
PACKS = [DATA, META, OLD, SMALL, MISNAMED]
_DEEP = b"/" + b"/".join([b"y" * 255] * 15) + b"/"
PARENTS = [b"/a", b"/", b"/a/..", b"/a/", b"a", b"/a\0b", b"/a//b", b"/" + b"x" * 255,
           b"/" + b"x" * 256,
           _DEEP + b"z" * (4094 - len(_DEEP)),  # the path (parent + b"/n"): 4096 bytes
           _DEEP + b"z" * (4095 - len(_DEEP))]

# values that stand for every JSON type but the right one, and the bounds
ODD = [None, True, False, 1.0, "1", [], {}, -1, 0, 1]


def file_item() -> dict[str, Any]:
    return {"name": "f.txt", "kind": "file", "mode": "0644", "uid": 1000, "gid": 100,
            "user": "u", "group": "g", "mtime_ns": 1_700_000_000_000_000_000, "size": 35,
            "chunks": [[HASH, 10, 0, 100, 10, "raw"], [HASH, 20, 3, 29, 5, "zstd"],
                       [HASH, 5, 0, 1000, 3, "zstd"]],
            "ino": 7, "ctime_ns": -5}


def dir_item() -> dict[str, Any]:
    return {"name": "d", "kind": "dir", "mode": "755", "uid": 0, "gid": 0,
            "mtime_ns": -1, "tree": [HASH, 300, 1, 29, 200, "zstd"]}


def link_item() -> dict[str, Any]:
    return {"name": "l", "kind": "symlink", "mode": "0777", "uid": 0, "gid": 0,
            "mtime_ns": 0, "target": "../t\u00e9"}


def values_for(key: str, value: Any) -> list[Any]:
    """Other values of one field: every odd one, and its bounds."""
    out = list(ODD)
    if isinstance(value, int) and not isinstance(value, bool):
        out += [UINT32, UINT32 + 1, INT64, INT64 + 1, -INT64 - 1, -INT64 - 2, value - 1,
                value + 1, 1 << 70]
    if isinstance(value, str):
        out += ["", "0", "644", "0o644", "06444", "0648", " 644", "\u0664\u0664\u0664", "x" * 256,
                "x" * 257, "x" * 4096, "x" * 4097, "\u00e9" * 2049, "\ud800", "a\0b",
                "file", "dir", "symlink", "hardlink", "fifo", "chardev", "blockdev",
                value + "x", value.upper()]
    return out


def ref_variants(ref: list[Any]) -> Iterator[list[Any] | Any]:
    """One reference, broken (or not) each way."""
    yield ref[:5]
    yield ref + ["x"]
    yield tuple(ref)
    for index in range(6):
        for value in values_for("", ref[index]) + [
                HASH.upper(), HASH[:63], HASH + "0", "raw", "zstd", "gzip", 0, 1, 2, 3, 4,
                MAX_CHUNK_SIZE, MAX_CHUNK_SIZE + 1, MAX_CHUNK_SIZE + 16, MAX_CHUNK_SIZE + 17,
                15, 16, 17, 26, 28, 29, 30, 4971, 4972, 4973, (1 << 30) - 16, (1 << 20) - 16]:
            changed = list(ref)
            changed[index] = value
            yield changed
    yield [ref[0], ref[1], 4, 4990, ref[4], ref[5]]  # beyond the table's pack 3
    yield [ref[0], ref[1], 4, 6000, ref[4], ref[5]]


def mutations(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield copy.deepcopy(item)
    for key in list(item) + ["size", "user", "group", "target", "tree", "chunks", "ino",
                             "ctime_ns", "xattrs", "extents", "rdev", "acl_access",
                             "chunk_lists", "path", "target_b64", "name_b64", "unknown"]:
        changed = copy.deepcopy(item)
        changed.pop(key, None)
        yield changed
        for value in values_for(key, item.get(key, 0)) + [item.get(key)]:
            changed = copy.deepcopy(item)
            changed[key] = value
            yield changed
    for key in ("tree", "chunks"):
        if key not in item:
            continue
        refs = [item[key]] if key == "tree" else item[key]
        for at, ref in enumerate(refs):
            for variant in ref_variants(ref):
                changed = copy.deepcopy(item)
                if key == "tree":
                    changed["tree"] = variant
                else:
                    changed["chunks"][at] = variant
                yield changed
    if "chunks" in item:
        for count in (0, 1, tc.INLINE_CHUNKS, tc.INLINE_CHUNKS + 1):
            changed = copy.deepcopy(item)
            changed["chunks"] = [item["chunks"][0]] * count
            changed["size"] = item["chunks"][0][1] * count
            yield changed


def both_ways(item: dict[str, Any], table: tc.PackTable, parent: bytes = b"/a"
              ) -> tuple[tuple[Entry, Any, Any] | None, tuple[Entry, Any, Any] | str]:
    packs = list(PACKS)
    path = parent + b"n" if parent == b"/" else parent + b"/n"
    parent_ok = check_path(parent) is None
    plain = tc._plain_entry(item, path, parent_ok, tc._slots(packs, table), table.overhead,
                            LIMITS)
    try:
        full: tuple[Entry, Any, Any] | str = tc._full_entry(item, 1, b"n", parent, packs,
                                                            table, "t", LIMITS)
    except ManifestError as err:
        full = str(err)
    return plain, full


@pytest.mark.parametrize("overhead", [0, 16])
@pytest.mark.parametrize("make", [file_item, dir_item, link_item])
def test_the_direct_decoder_accepts_only_what_the_full_checks_accept(make, overhead: int
                                                                      ) -> None:
    table = tc.PackTable.of(PACKS[:4], overhead)
    base = make()
    if overhead:  # a sealed blob is 16 bytes longer
        for ref in base.get("chunks", []) + ([base["tree"]] if "tree" in base else []):
            ref[4] += overhead
    assert both_ways(base, table)[0] is not None, "the common entry takes the direct way"
    direct = refused = 0
    for item in mutations(base):
        plain, full = both_ways(item, table)
        if plain is None:
            refused += isinstance(full, str)
            continue
        direct += 1
        assert not isinstance(full, str), f"{item}: accepted directly, but {full}"
        assert plain == full, item
    assert direct > 10 and refused > 50  # both kinds of case were met
    for parent in PARENTS:
        plain, full = both_ways(base, table, parent)
        assert plain is None or plain == full, parent
        assert (plain is None) == isinstance(full, str), parent
    assert len(_DEEP + b"z" * (4094 - len(_DEEP)) + b"/n") == LIMITS.path_bytes


def test_a_leaf_decodes_the_same_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = []
    for number in range(200):
        obj = {"kind": "file", "mode": "0600", "uid": number, "gid": 1, "mtime_ns": number,
               "size": 3}
        if number % 7 == 0:
            obj["xattrs"] = {"user.a": "YQ=="}  # not a common entry
        ref = tc.BlobRef(HASH, 3, DATA.key, 29 + number, 3, "raw")
        entries.append((tc.entry_object(obj, b"n%03d" % number), [ref], None, None))
    entries.append((tc.entry_object({"kind": "dir", "mode": "0700", "uid": 0, "gid": 0,
                                     "mtime_ns": 0}, "\u00e9".encode() + b"-dir"),
                    None, None, tc.BlobRef(HASH, 10, META.key, 40, 10, "raw")))
    plain = tc.encode_leaf(entries)
    table = tc.PackTable.of(PACKS[:4])
    fast = tc.decode_node(plain, b"/", table, "t")
    monkeypatch.setattr(tc, "_plain_entry", lambda *args: None)
    full = tc.decode_node(plain, b"/", table, "t")
    assert fast == full and len(fast.entries) == 201
    assert fast.entries[7].xattrs == {"user.a": b"a"}


def test_the_cut_rule_is_the_digests_first_four_bytes_as_a_number() -> None:
    """tc.cut_after compares digests as bytes: the same cuts as the number rule."""
    import random

    rng = random.Random(5)
    names = [rng.randbytes(rng.randrange(0, 12)) for _ in range(20_000)]
    names += [b"f%06d" % n for n in range(20_000)]
    cuts = 0
    for name in names:
        number = int.from_bytes(hashlib.sha256(name).digest()[:4], "big")
        assert tc.cut_after(name, tc.LEAF_MIN) == (number < tc.LEAF_CUT)
        assert not tc.cut_after(name, tc.LEAF_MIN - 1)
        cuts += number < tc.LEAF_CUT
    assert 30 < cuts < 200
