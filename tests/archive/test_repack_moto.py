"""Repacks under the shipped backup role, with moto enforcing IAM (issue 12 item 2).

The backup policy allows GetObject only on ``runs/``: a run that rewrites a
pack it needs little of must not read ``packs/``.  Before, the second run
here exited 1 with ``GET packs/…: AccessDenied`` and wrote no manifest.
(moto is the IAM enforcer here, not a faithful Object Lock store: see
tests/setup/test_setup_moto.py.)
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from setup.test_setup_moto import moto, s3archive  # noqa: F401  (the fixture)
from support.moto_server import MotoServer


def test_a_repack_under_the_shipped_backup_policy_succeeds(moto: MotoServer,  # noqa: F811
                                                           tmp_path: Path) -> None:
    moto.set_iam_enforcement(False)
    bucket = "repack-bucket"
    setup = s3archive(moto, "create-resources", "--bucket", bucket, "--endpoint-url",
                      moto.endpoint_url, "--iam", "--no-bucket-policy")
    assert setup.returncode == 0, setup.stderr
    root = tmp_path / "root"
    written = s3archive(moto, "write-config", "--root", str(root), "--bucket", bucket,
                        "--endpoint-url", moto.endpoint_url, "--host-name", "rp-host",
                        "--create-user", "rp-host-backup", "--cache-dir", str(tmp_path / "cache"),
                        "--state-file", str(tmp_path / "state/last-run.json"))
    assert written.returncode == 0, written.stderr
    iam = moto.client("iam")  # the shipped policies: this host's, and the shared backup group's
    assert iam.list_user_policies(UserName="rp-host-backup")["PolicyNames"] == [
        f"s3archive-{bucket}-host-rp-host"]
    assert [g["GroupName"] for g in iam.list_groups_for_user(UserName="rp-host-backup")["Groups"]
            ] == [f"s3archive-{bucket}-backup"]
    config = root / "etc/s3archive/config.toml"
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(3 << 20))
    (data / "kept.bin").write_bytes(os.urandom(100_000))
    picker = root / "etc/s3archive/pickers.d/50-test-data"
    picker.write_text(f"#!/bin/sh\necho {data}\n")
    picker.chmod(0o755)

    def archive(days: int) -> dict:
        until = (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)
        text = re.sub(r"\[retention\][^\[]*", f'[retention]\nuntil = "{until.isoformat()}"\n'
                      "slack_days = 0\nrepack_below = 0.5\n\n", config.read_text())
        config.write_text(text)
        result = s3archive(moto, "--config", str(config), "archive", "--json", admin=False)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    moto.set_iam_enforcement(True)
    try:
        first = archive(days=1)
        assert first["packs_uploaded"] == 2  # data, metadata
        (data / "big.bin").unlink()
        second = archive(days=3)
        # the data pack rewritten from the files, the changed directory's node in a
        # new metadata pack
        assert second["packs_rewritten"] == 1 and second["packs_uploaded"] == 2, second
        # one GET: the host's latest run's root object (whether it was encrypted);
        # nothing of a pack is read
        assert second["requests"].get("GetObject", 0) == 1
    finally:
        moto.set_iam_enforcement(False)
