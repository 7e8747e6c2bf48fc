"""s3archive: back up Linux hosts into S3 under Object Lock."""

__version__ = "0.1.0"
