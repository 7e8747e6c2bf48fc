"""Cryptography of storage format 2 (docs/FORMAT2.md section 5), without I/O.

``bech32`` encodes keys as text; ``keys`` holds the age X25519 restore key
pair and its paper form; ``age`` wraps file keys to recipients and reads and
writes complete age v1 files (a pack's key block is one); ``blob`` makes a
pack's key and key block, and seals and opens one stored blob; ``dedup``
derives keyed blob ids and the other per-bucket keys from a host's dedup
secret.
"""
