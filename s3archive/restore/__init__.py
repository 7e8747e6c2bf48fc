"""Restore: plan (which entries, which byte ranges), write the tree, apply metadata."""
