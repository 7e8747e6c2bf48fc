"""Restore: plan (which entries, which byte ranges), download, write the tree."""
