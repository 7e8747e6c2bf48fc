"""A configuration file that is not valid UTF-8 TOML: exit 2 and one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli

VALID = b'[s3]\nbucket = "b"\n[host]\nname = "h"\n'


@pytest.mark.parametrize("content, why", [
    (VALID + b'[retention]\n# caf\xe9\n',
     "not valid TOML: not UTF-8 at byte 53 (line 6, column 6: b'\\xe9')"),
    (b'\xff\xfe[\x00s\x003\x00]\x00',  # saved as UTF-16 by an editor
     "not valid TOML: not UTF-8 at byte 0 (line 1, column 1: b'\\xff')"),
    (VALID + b'[x\n', ("not valid TOML: Expected ']' at the end of a table declaration "
                       "(at line 5, column 3)")),
    (VALID + b'x = "nul\x00"\n', "not valid TOML: Illegal character '\\x00' (at line 5, column 9)"),
    (b"#" * (2 << 20), "not a configuration file: larger than 1024 KiB"),
], ids=["latin-1", "utf-16", "bad-toml", "nul", "huge"])
@pytest.mark.parametrize("command", [["status"], ["archive"], ["verify"]])
def test_an_undecodable_config_is_exit_2_and_one_line(tmp_path: Path, content: bytes, why: str,
                                                      command: list[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(content)
    result = CliRunner().invoke(cli, ["--config", str(config), *command])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr == f"s3archive: error: {config}: {why}\n"
