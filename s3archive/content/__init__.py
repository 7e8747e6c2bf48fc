"""Content: chunking, per-chunk encoding, packing."""
