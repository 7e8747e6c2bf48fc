"""The application context shared by every command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from s3archive.config import Config, default_config_path, load_config


@dataclass
class AppContext:
    config_path: Path | None = None
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    _config: Config | None = field(default=None, repr=False)

    @property
    def resolved_config_path(self) -> Path:
        return self.config_path if self.config_path is not None else default_config_path()

    def config(self) -> Config:
        """Load (once) and validate the configuration file."""
        if self._config is None:
            self._config = load_config(self.resolved_config_path)
        return self._config


pass_app = click.make_pass_decorator(AppContext, ensure=True)
