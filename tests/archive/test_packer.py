"""The packer: chunks concatenated into packs named by their body's hash."""

from __future__ import annotations

import hashlib
import random
import threading

import pytest

from s3archive.archive.packer import ChunkLocation, Pack, Packer
from s3archive.format import pack2
from s3archive.format.chunk_codec import EncodedChunk, chunk_hash


def encoded(data: bytes, encoding: str = "raw", size: int | None = None) -> EncodedChunk:
    return EncodedChunk(chunk_hash(data), size if size is not None else len(data), encoding, data)


class Sealed:
    def __init__(self) -> None:
        self.packs: list[tuple[Pack, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, pack: Pack, body: bytearray) -> None:
        with self.lock:
            self.packs.append((pack, bytes(body)))


def test_chunks_are_concatenated_and_a_full_pack_is_sealed_with_its_hash_as_name() -> None:
    sealed = Sealed()
    packer = Packer(100, sealed)
    packer.add(encoded(b"a" * 60))
    packer.add(encoded(b"b" * 50, "zstd", size=500))  # reaches 100: sealed
    packer.add(encoded(b"c" * 10))
    assert len(sealed.packs) == 1
    pack, body = sealed.packs[0]
    assert body == b"a" * 60 + b"b" * 50
    assert pack.key == f"packs/{hashlib.sha256(body).hexdigest()[:2]}/{hashlib.sha256(body).hexdigest()}"
    assert pack.size == 110 and pack.buffer == bytearray(), "the body is handed over, not kept"
    assert pack.located() == [ChunkLocation(chunk_hash(b"a" * 60), pack.key, 0, 60, 60, "raw"),
                              ChunkLocation(chunk_hash(b"b" * 50), pack.key, 60, 50, 500, "zstd")]
    packer.flush()
    (third,) = sealed.packs[1][0].located()
    assert third.pack != pack.key and third.offset == 0
    assert [body for _, body in sealed.packs] == [b"a" * 60 + b"b" * 50, b"c" * 10]
    packer.flush()
    assert len(sealed.packs) == 2, "flushing an empty pack seals nothing"


def test_a_chunk_larger_than_the_target_makes_a_pack_of_its_own() -> None:
    sealed = Sealed()
    packer = Packer(10, sealed)
    packer.add(encoded(b"x" * 25))
    assert [len(body) for _, body in sealed.packs] == [25]


def test_chunks_from_many_threads_each_land_once_where_their_location_says() -> None:
    sealed = Sealed()
    packer = Packer(64 * 1024, sealed)
    rng = random.Random(5)
    payloads = [rng.randbytes(rng.randrange(1, 9000)) for _ in range(800)]

    def produce(indexes: range) -> None:
        for index in indexes:
            packer.add(encoded(payloads[index]))

    threads = [threading.Thread(target=produce, args=(range(i, len(payloads), 4),))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    packer.flush()
    bodies = {pack.key: body for pack, body in sealed.packs}
    assert sum(len(b) for b in bodies.values()) == sum(len(p) for p in payloads)
    locations = {c.hash: c for pack, _ in sealed.packs for c in pack.located()}
    assert len(locations) == len(payloads)
    for payload in payloads:
        location = locations[chunk_hash(payload)]
        body = bodies[location.pack]
        assert body[location.offset:location.offset + location.stored] == payload
    assert len({pack.number for pack, _ in sealed.packs}) == len(sealed.packs)
    assert all(len(body) >= 64 * 1024 for _, body in sealed.packs[:-1])


def test_blobs_past_the_buffers_room_grow_it_and_every_body_holds_its_blobs() -> None:
    # a pack's buffer has room for its target and as much again (at most 4 MiB):
    # blobs that fit are written into it, a larger one grows it
    sealed = Sealed()
    packer = Packer(100, sealed, prefix="data")
    sizes = [150, 40, 300, 1, 99, 100, 260]
    payloads = [bytes([n]) * size for n, size in enumerate(sizes)]
    for payload in payloads:
        packer.add(encoded(payload))
    packer.flush()
    assert len(sealed.packs) == 5
    placed = 0
    for pack, body in sealed.packs:
        assert len(body) == pack.size and pack.buffer == bytearray()
        assert body.startswith(pack2.MAGIC) and body.endswith(pack2.FOOTER_MAGIC)
        for location in pack.located():
            payload = payloads[placed]
            assert body[location.offset:location.offset + location.stored] == payload
            placed += 1
    assert placed == len(payloads)


@pytest.mark.parametrize("in_place", [True, False])  # cryptography >= 45 seals in place
def test_sealed_blobs_are_written_into_the_buffers_room_and_open_where_located(
        in_place: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from s3archive.archive.encryption import RunEncryption
    from s3archive.crypto.blob import BlobPlace, BlobSealer, open_sealed
    from s3archive.crypto.dedup import DedupSecret
    from s3archive.crypto.keys import Identity

    rng = random.Random(9)
    if not in_place:
        monkeypatch.setattr(BlobSealer, "__init__", _without_encrypt_into(BlobSealer.__init__))
    keys: dict[bytes, bytes] = {}
    encryption = RunEncryption([Identity(rng.randbytes(32)).recipient()],
                               DedupSecret(rng.randbytes(32)))
    new_pack = encryption.new_pack

    def remembered() -> tuple[bytes, bytes, bytes]:
        pack_id, block, key = new_pack()
        keys[pack_id] = key
        return pack_id, block, key

    monkeypatch.setattr(encryption, "new_pack", remembered)
    sealed = Sealed()
    # room for 1000 bytes past the target: the 2500-byte blob grows its buffer
    packer = Packer(1000, sealed, prefix="data", sealer=encryption)
    payloads = [rng.randbytes(size) for size in (700, 100, 2500, 10, 400, 600, 1800)]
    for payload in payloads:
        packer.add(encoded(payload))
    packer.flush()
    assert len(sealed.packs) >= 3 and max(len(pack.chunks) for pack, _ in sealed.packs) >= 2
    opened = []
    for pack, body in sealed.packs:
        assert len(body) == pack.size and pack.buffer == bytearray()
        for location in pack.located():
            place = BlobPlace(pack.pack_id, location.offset, pack2.KIND_DATA,
                              pack2.ENCODING_BYTE["raw"], bytes.fromhex(location.hash))
            opened.append(open_sealed(keys[pack.pack_id], place,
                                      body[location.offset:location.offset + location.stored]))
    assert opened == payloads


def _without_encrypt_into(init):
    def patched(self, *args):
        init(self, *args)
        self._into = False
    return patched



@pytest.mark.parametrize("target_mib, blobs", [(16, [4, 8, 16, 16]), (8, [4, 8, 8]),
                                               (4, [4, 4]), (1, [1, 1])])
def test_a_packers_first_packs_are_smaller_up_to_its_target(target_mib: int,
                                                            blobs: list[int]) -> None:
    """A run that stores little never holds a body of the full target: the first pack
    is sealed at 4 MiB, the next at 8, then at the target (a target of 4 MiB or less
    from the first)."""
    mib = 1 << 20
    sealed: list[tuple[int, int]] = []  # (blobs, body length): the bodies are not kept
    packer = Packer(target_mib * mib, lambda pack, body: sealed.append((pack.blobs, len(body))),
                    prefix="data")
    chunk = bytes(mib)
    for number in range(sum(blobs)):
        packer.add(EncodedChunk(chunk_hash(b"%d" % number), mib, "raw", chunk))
    packer.flush()
    assert [count for count, _ in sealed] == blobs
    for count, length in sealed:  # (the preamble and the index tail besides the blobs)
        assert count * mib < length < count * mib + 4096


@pytest.mark.parametrize("prefix", [None, "data"])
def test_adding_a_batch_places_each_chunk_as_adding_it_alone_does(prefix: str | None) -> None:
    # add_many (a content worker's batch, the lock taken once a pack) against add of
    # each chunk: the same packs, each blob at the same offset, the same index; blobs
    # past a buffer's room, across a pack's end, and a batch that seals several packs
    rng = random.Random(7)
    sizes = [rng.choice([1, 30, 99, 100, 150, 260, 700, 1500, 2500]) for _ in range(300)]
    chunks = [encoded(bytes([n % 251]) * size + n.to_bytes(2, "big"),
                      rng.choice(["raw", "zstd"])) for n, size in enumerate(sizes)]
    alone, batched = Sealed(), Sealed()
    one_by_one, many = Packer(1000, alone, prefix=prefix), Packer(1000, batched, prefix=prefix)
    expected = [one_by_one.add(chunk) for chunk in chunks]
    got, at = [], 0
    while at < len(chunks):
        count = rng.choice([1, 2, 5, 64, 200])
        got += many.add_many(chunks[at:at + count])
        at += count
    one_by_one.flush()
    many.flush()
    assert len(batched.packs) == len(alone.packs) > 5

    def placed(sealed: Sealed) -> list[tuple[object, ...]]:
        return [(location.hash, location.offset, location.stored, location.size,
                 location.encoding, body[location.offset:location.offset + location.stored])
                for pack, body in sealed.packs for location in pack.located()]

    assert placed(batched) == placed(alone)
    assert [location[:1] + location[2:] for location in got] == \
        [location[:1] + location[2:] for location in expected]
    for (pack, body), (pack_alone, body_alone) in zip(batched.packs, alone.packs):
        assert pack.size == len(body) and pack.blobs == pack_alone.blobs
        assert pack.index == pack_alone.index
        assert [location.pack for location in pack.located()] == [pack.key] * pack.blobs
        if prefix is None:  # (format 2: each pack's id is its own)
            assert (pack.key, body) == (pack_alone.key, body_alone)
