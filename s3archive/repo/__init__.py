"""The bucket read as a repository: the run catalog, run resolution, one pack reader."""
