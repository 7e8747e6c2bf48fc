"""The by-hand procedures pass S3 version ids so that the AWS CLI takes them.

RGW's version ids may begin with "-" (``-oe2levIo4…``); the AWS CLI's argparse
takes ``--version-id -oe2…`` for two options and stops with "expected one
argument", so a documented command that passes a version id from a variable
must write ``--version-id="$VID"``.  The shim the by-hand tests use where the
CLI is missing refuses the same way, so the tests fail as a reader would.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import aws_s3api_shim as shim  # pytest puts this directory on sys.path (no __init__.py)

ROOT = Path(__file__).resolve().parents[2]


def test_a_version_id_that_starts_with_a_dash_is_refused_as_a_separate_word() -> None:
    with pytest.raises(SystemExit) as stop:
        shim._parse(["s3api", "get-object", "--bucket", "b", "--key", "k",
                     "--version-id", "-oe2levIo4Ttv4PD2.g5CNW5i.qBiY", "out"])
    assert stop.value.code == "argument --version-id: expected one argument"


def test_a_version_id_joined_with_equals_is_taken_whole() -> None:
    command, options, rest = shim._parse(
        ["s3api", "get-object", "--bucket", "b", "--key", "k",
         "--version-id=-oe2levIo4Ttv4PD2.g5CNW5i.qBiY", "--range", "bytes=0-9", "out"])
    assert (command, rest) == ("get-object", ["out"])
    assert options == {"bucket": "b", "key": "k", "version-id": "-oe2levIo4Ttv4PD2.g5CNW5i.qBiY",
                       "range": "bytes=0-9"}


@pytest.mark.parametrize("path", ["docs/FORMAT.md", "tests/format/test_restore_by_hand_rgw.py",
                                  "README.md"])
def test_documented_commands_join_variable_version_ids_with_equals(path: str) -> None:
    text = (ROOT / path).read_text()
    separate = re.findall(r"--version-id\s+[\"']?\$\S*", text)
    assert separate == [], separate
