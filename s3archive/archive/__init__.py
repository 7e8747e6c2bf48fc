"""The write path: sources, chunker, packer, chunk writer, local cache, retention
and lease, manifest assembly (the commit), run record."""
