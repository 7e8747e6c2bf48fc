"""`s3archive demo`: the whole cycle against its own moto server over HTTP,
as root and as an ordinary user, and a comparison that does find differences."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from s3archive.demo import sample


def run_demo(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["demo", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_demo_runs_the_cycle_exactly_and_leaves_nothing_behind() -> None:
    code, out, err = run_demo("--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] is True and result["differences"] == []
    assert result["work_dir"] is None
    work = re.search(r"working in (\S+)", err)[1]
    assert not Path(work).exists()
    assert re.match(r"http://127\.0\.0\.1:\d+$", result["endpoint_url"])
    steps = {s["step"]: s for s in result["steps"]}
    assert [s["step"] for s in result["steps"]] == [
        "create-resources", "key generate", "write-config", "archive (first run)",
        "archive (after the change)", "runs", "verify", "verify", "restore", "compare",
        "restore-snapshot"]
    first, second = steps["archive (first run)"], steps["archive (after the change)"]
    assert first["exit_code"] == second["exit_code"] == 0
    assert first["files"] == 6 and second["files"] == 7 and second["files_unchanged"] == 5
    assert first["snapshots"] == second["snapshots"] == 1
    assert first["bytes_uploaded"] > sample.BLOB_BYTES  # the blob is incompressible
    assert second["bytes_uploaded"] < first["bytes_uploaded"] / 100
    assert second["bytes_read"] < 100_000
    assert first["packs_uploaded"] >= 1 and first["requests"] > 0
    assert first["retain_until"] > second["run_id"][:4]  # a date, years ahead (yearly tier)
    assert len(steps["runs"]["runs"]) == 2
    verified = [s for s in result["steps"] if s["step"] == "verify"]
    assert all(v["ok"] and v["problems"] == [] and v["chunks_checked"] > 0 for v in verified)
    assert steps["restore"]["ok"] and steps["restore"]["files"] == 7
    assert steps["compare"]["entries"] == 14 and steps["compare"]["differences"] == []
    assert steps["restore-snapshot"]["identical"] is True
    for figure in ("files", "read", "uploaded in", "pack(s)", "requests", "locked GOVERNANCE until"):
        assert figure in err
    assert "compare: 14 entries identical" in err
    # The tiers are explained, not only named: the plan write-config prints, and
    # why the first run is locked for years.
    assert steps["write-config"]["retention_plan"][0].startswith("retention plan (GOVERNANCE")
    assert "the FIRST run on this host is one" in err
    assert (f"promoted to the yearly tier: on AWS this run would stay locked, and billed, "
            f"until {first['retain_until'][:10]}") in err
    assert result["explore"] == []
    # A restore key made in the work directory; the host got only its recipient
    # and a dedup secret of its own.
    key = steps["key generate"]
    assert key["recipient"].startswith("age1") and key["key_file"].startswith(work)
    assert steps["write-config"]["recipients"] == [key["recipient"]]
    assert f"recipient {key['recipient']} is all the host gets" in err
    assert "restore latest --target" in err and "--key restore.key" in err


def test_demo_keep_leaves_an_explorable_directory(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    code, out, err = run_demo("--keep", str(keep))
    assert code == 0, err
    assert "demo ok" in out and str(keep) in out
    config = keep / "root" / "etc" / "s3archive" / "config.toml"
    assert config.is_file()
    from s3archive.config import load_config
    from s3archive.crypto.keys import read_identity_file

    loaded = load_config(config)
    (identity,) = read_identity_file(keep / "restore.key")
    assert loaded.encryption is not None
    assert loaded.encryption.recipients == (identity.recipient(),)
    assert loaded.encryption.dedup_secret_file == config.parent / "dedup.key"
    loaded.encryption.dedup_secret  # installed 0600, owned by this user: the reader accepts it
    assert not (keep / "root").joinpath("etc", "s3archive", "restore.key").exists()
    assert keep.stat().st_mode & 0o777 == 0o700
    assert (keep / "state" / "last-run.json").is_file()
    restored = keep / "restored" / str(keep / "sample" / "data").lstrip("/")
    assert (restored / "docs" / "new-today.txt").read_text() == "a file created between the runs\n"
    assert (keep / "restored-db" / "app.sqlite3").is_file()
    commands = [line.strip() for line in out.splitlines() if line.startswith("  s3archive ")]
    assert commands[0] == f"s3archive demo --serve {keep}"
    assert {c.split()[3] for c in commands[1:]} == {"runs", "ls", "find", "diff", "restore"}
    assert commands[-1].endswith(f"--key {keep}/restore.key")
    code, _, err = run_demo("--keep", str(keep))
    assert code == 2 and "must be empty or missing" in err

    # The endpoint comes back with the bucket (its versions pinned by the
    # manifests), through the real command in its own process; each printed
    # command then works as printed.
    serving = subprocess.Popen([sys.executable, "-m", "s3archive", "demo", "--serve", str(keep)],
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        assert "serving the demo's bucket on" in serving.stderr.readline()
        for command in commands[1:]:
            done = CliRunner().invoke(cli, shlex.split(command)[1:], catch_exceptions=False)
            assert done.exit_code == 0, (command, done.output)
            if " find " in command:
                assert "docs/notes.md" in done.stdout, done.stdout
        runs = CliRunner().invoke(cli, ["--config", str(config), "runs", "--json"])
        assert [run["status"] for run in json.loads(runs.stdout)] == ["complete", "complete"]
        explored = keep / "explore" / str(keep / "sample" / "data" / "docs").lstrip("/")
        assert (explored / "new-today.txt").read_text() == "a file created between the runs\n"
        # A second endpoint on the same port is refused with one line, not a hang.
        code, _, err = run_demo("--serve", str(keep))
        assert code == 2 and "is in use" in err
    finally:
        serving.terminate()
        assert serving.wait(timeout=30) == 0
    assert "endpoint stopped" in serving.stderr.read()


def test_demo_serve_refuses_what_is_not_its_own(tmp_path: Path) -> None:
    code, _, err = run_demo("--serve", str(tmp_path))
    assert code == 2 and "not a directory kept by `s3archive demo --keep`" in err
    (tmp_path / "root" / "etc" / "s3archive").mkdir(parents=True)
    (tmp_path / "root" / "etc" / "s3archive" / "config.toml").write_text(
        '[s3]\nendpoint_url = "http://127.0.0.1:1"\n')
    state = tmp_path / "endpoint-s3.pickle"
    state.write_bytes(b"not a pickle")
    state.chmod(0o666)  # anyone could have written the code it would load
    code, _, err = run_demo("--serve", str(tmp_path))
    assert code == 2 and "writable by nobody else" in err and "Traceback" not in err
    state.chmod(0o600)
    code, _, err = run_demo("--serve", str(tmp_path))
    assert code == 2 and "endpoint-s3.pickle: cannot be read" in err


UNPRIVILEGED = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities needs root")
def test_demo_without_privileges(tmp_path: Path) -> None:
    """Every capability dropped (no chown, no DAC override, no trusted xattrs),
    as an ordinary user has none.  (The interpreter lives below /root here,
    so the uid stays 0: a different uid could not even start Python.)"""
    caps = subprocess.run(UNPRIVILEGED + ["grep", "CapEff", "/proc/self/status"],
                          capture_output=True, text=True, check=True).stdout
    assert caps.split() == ["CapEff:", "0000000000000000"]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(UNPRIVILEGED + [sys.executable, "-m", "s3archive", "demo", "--json"],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["ok"] and result["differences"] == []
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_comparison_finds_every_kind_of_difference(tmp_path: Path) -> None:
    a = sample.make_sample(tmp_path / "a").tree
    b = sample.make_sample(tmp_path / "b").tree
    count, differences = sample.compare_trees(a, b)
    assert count == 13
    # Fresh trees differ only in times: make them agree, then break one thing each.
    for path in sorted(b.rglob("*"), reverse=True) + [b]:
        twin = a / path.relative_to(b)
        stat = os.lstat(twin)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns), follow_symlinks=False)
    assert sample.compare_trees(a, b) == (13, [])
    (b / "docs" / "readme-hardlink.txt").unlink()
    (b / "docs" / "readme-hardlink.txt").write_bytes((a / "docs" / "readme.txt").read_bytes())
    os.removexattr(b / "docs" / "notes.md", sample.XATTR_NAME)
    (b / "bin" / "tool.sh").chmod(0o700)
    (b / "notes-symlink").unlink()
    os.symlink("docs/readme.txt", b / "notes-symlink")
    (b / "extra").write_text("")
    with open(b / "blob.bin", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"X")
    _, differences = sample.compare_trees(a, b)
    text = "\n".join(differences)
    for expected in ("hardlinks differ", "docs/notes.md: xattrs differ", "bin/tool.sh: mode",
                     "notes-symlink: symlink target", "extra: only in the restored tree",
                     "blob.bin: sha256 differs", "docs/readme-hardlink.txt: mtime_ns"):
        assert expected in text, text


def test_ci_runs_the_readme_test_command_in_a_virtual_environment() -> None:
    """`.ci/run` runs the Quick start's second command exactly; both commands
    install into a venv (stock Debian/Ubuntu refuse pip into the system Python)."""
    repo = Path(__file__).resolve().parents[2]
    quick_start = (repo / "README.md").read_text().split("## Quick start")[1].split("\n## ")[0]
    commands = re.findall(r"```\n(.+)\n```", quick_start)
    assert len(commands) >= 2
    demo, tests = commands[0], commands[1]
    ci = (repo / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == tests
    for command in (demo, tests):
        assert "python3 -m venv" in command and "python3-venv" in command
        assert "libacl1-dev" in command and "python3-dev" in command and "gcc" in command
        assert not re.search(r"(^|&& )pip ", command)  # never the system pip
    assert demo.endswith("s3archive demo")
