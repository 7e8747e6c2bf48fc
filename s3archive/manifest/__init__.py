"""The manifest of one run: model, and codec (strict: bucket content is untrusted)."""
