"""Object storage: the interface, the S3 implementation and wrappers."""
