"""The storage format in code, no I/O: model, manifest codec, chunk codec, size bounds."""
