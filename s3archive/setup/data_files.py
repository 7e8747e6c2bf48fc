"""Files shipped inside the package (``s3archive/data/``)."""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable


def data_dir(name: str) -> Traversable:
    return resources.files("s3archive").joinpath("data", name)


def data_text(*parts: str) -> str:
    return resources.files("s3archive").joinpath("data", *parts).read_text(encoding="utf-8")


def example_scripts(directory: str) -> dict[str, str]:
    """name -> text of every script in ``data/<directory>/``."""
    return {item.name: item.read_text(encoding="utf-8")
            for item in sorted(data_dir(directory).iterdir(), key=lambda i: i.name)
            if item.is_file() and not item.name.startswith(".")}
