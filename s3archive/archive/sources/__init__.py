"""Where backup content comes from: pickers, the filesystem walker, snapshotters."""
