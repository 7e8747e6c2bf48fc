"""A store that hands every call to the store it wraps: test doubles subclass it
and override only what they change (a failing PUT, a refused GET, a count)."""

from __future__ import annotations

from typing import Any


class StoreWrapper:
    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def location(self) -> str:
        return self.inner.location
