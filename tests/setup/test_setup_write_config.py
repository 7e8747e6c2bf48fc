"""write-config: real files below --root, the real CLI, systemd-analyze on the
written units, the shipped examples, and never clobbering an operator's edit."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from s3archive.config import load_config

ETC = Path("etc/s3archive")
UNITS = Path("etc/systemd/system")
PICKERS = ("10-etc", "20-home", "30-root", "40-crontabs")
SNAPSHOTTERS = ("10-packages", "20-postgresql", "30-mysql", "40-sqlite", "50-zfs", "60-lvm")


def write_config(root: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["write-config", "--root", str(root), "--bucket", "acme-b",
                                      *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_writes_config_examples_and_units(tmp_path: Path) -> None:
    output = write_config(tmp_path, "--region", "eu-west-1", "--host-name", "web1",
                          "--daily-days", "10", "--lock-mode", "COMPLIANCE",
                          "--endpoint-url", "https://s3.example.net",
                          "--credentials-file", "/etc/s3archive/keys")
    config = load_config(tmp_path / ETC / "config.toml")
    assert config.s3.bucket == "acme-b" and config.s3.region == "eu-west-1"
    assert config.s3.endpoint_url == "https://s3.example.net"
    assert config.s3.credentials_file == Path("/etc/s3archive/keys")
    assert config.host_name == "web1"
    assert config.retention.mode == "COMPLIANCE" and config.retention.daily_days == 10
    for directory, names in (("pickers.d", PICKERS), ("snapshots.d", SNAPSHOTTERS)):
        for name in names:
            path = tmp_path / ETC / directory / name
            mode = path.stat().st_mode
            assert not mode & 0o111, f"{path} is executable: examples must start disabled"
    for unit in ("s3archive.service", "s3archive.timer"):
        assert (tmp_path / UNITS / unit).is_file()
    # --root never enables: it prints the exact commands instead.
    assert "systemctl daemon-reload" in output
    assert "systemctl enable --now s3archive.timer" in output
    assert "/etc/s3archive/keys does not exist" in output


def test_config_without_credentials_uses_the_default_chain(tmp_path: Path) -> None:
    write_config(tmp_path, "--profile", "backup")
    config = load_config(tmp_path / ETC / "config.toml")
    assert config.s3.profile == "backup" and config.s3.credentials_file is None
    assert not (tmp_path / ETC / "credentials").exists()


def test_credential_sources_are_exclusive(tmp_path: Path) -> None:
    output = write_config(tmp_path, "--profile", "p", "--role-arn", "arn:aws:iam::1:role/r",
                          code=2)
    assert "--profile and --role-arn are exclusive" in output
    assert not (tmp_path / ETC).exists()


def test_never_overwrites_an_operator_edit_without_force(tmp_path: Path) -> None:
    write_config(tmp_path)
    config = tmp_path / ETC / "config.toml"
    picker = tmp_path / ETC / "pickers.d" / "10-etc"
    config.write_text(config.read_text() + "# tuned by the operator\n")
    picker.chmod(0o755)  # the operator enabled a picker: a mode change is not an edit
    output = write_config(tmp_path, "--daily-days", "20", code=2)
    assert str(config) in output and str(picker) not in output
    assert "tuned by the operator" in config.read_text()
    output = write_config(tmp_path, "--daily-days", "20", "--force")
    assert "tuned by the operator" not in config.read_text()
    assert load_config(config).retention.daily_days == 20
    assert picker.stat().st_mode & 0o777 == 0o755


def test_updates_its_own_unchanged_files(tmp_path: Path) -> None:
    write_config(tmp_path, "--daily-days", "5")
    output = write_config(tmp_path, "--daily-days", "6")
    assert "updated" in output and "unchanged" in output
    assert load_config(tmp_path / ETC / "config.toml").retention.daily_days == 6


def test_a_foreign_file_is_a_conflict(tmp_path: Path) -> None:
    unit = tmp_path / UNITS / "s3archive.timer"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Timer]\nOnCalendar=hourly\n")
    output = write_config(tmp_path, code=2)
    assert str(unit) in output
    assert unit.read_text() == "[Timer]\nOnCalendar=hourly\n"
    assert not (tmp_path / ETC / "config.toml").exists()  # nothing written at all


def test_written_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    write_config(tmp_path)
    units = [str(tmp_path / UNITS / u) for u in ("s3archive.service", "s3archive.timer")]
    verify = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "s3archive" not in verify.stderr, verify.stderr


def test_systemd_analyze_verify_can_fail(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    bad = tmp_path / "s3archive.service"
    bad.write_text("[Service]\nType=oneshot\nExecStart=relative/path archive\n")
    verify = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True,
                            text=True)
    assert verify.returncode != 0


def _unit(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_service_is_hardened_and_exit_3_stays_visible(tmp_path: Path) -> None:
    write_config(tmp_path, "--cache-dir", "/srv/s3archive-cache")
    service = _unit(tmp_path / UNITS / "s3archive.service")
    exec_start = service["ExecStart"][0]
    executable = exec_start.split(" --config ")[0]
    assert Path(executable.split()[0]).is_absolute() and os.access(executable.split()[0], os.X_OK)
    assert exec_start.endswith("--config /etc/s3archive/config.toml archive")
    assert service["Type"] == ["oneshot"]
    assert service["ProtectSystem"] == ["strict"] and service["PrivateTmp"] == ["yes"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["CacheDirectory"] == ["s3archive"] and service["StateDirectory"] == ["s3archive"]
    assert service["ReadWritePaths"] == ["/srv/s3archive-cache /var/lib/s3archive"]
    assert service["Nice"] == ["19"] and service["IOSchedulingClass"] == ["idle"]
    assert service["ProtectHome"] == ["read-only"]  # backups read /home, never write it
    assert service["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID"]
    # Exit 3 (manifest written, some sources failed) must not count as success.
    assert "SuccessExitStatus" not in service
    text = (tmp_path / UNITS / "s3archive.service").read_text()
    assert "Exit 3 is deliberately" in text
    timer = _unit(tmp_path / UNITS / "s3archive.timer")
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"]
    assert timer["RandomizedDelaySec"] == ["1h"] and timer["WantedBy"] == ["timers.target"]


@pytest.mark.parametrize("directory,name", [("pickers.d", n) for n in PICKERS]
                         + [("snapshots.d", n) for n in SNAPSHOTTERS])
def test_examples_are_valid_scripts_with_a_header(tmp_path: Path, directory: str,
                                                  name: str) -> None:
    write_config(tmp_path)
    path = tmp_path / ETC / directory / name
    text = path.read_text()
    assert "# Needs:" in text and "chmod +x" in text
    if directory == "snapshots.d":
        assert 'echo "::restore-through:: ' in text
    shell = "bash" if directory == "snapshots.d" else "sh"
    assert text.startswith(f"#!/bin/{shell}\n")
    check = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_picker_examples_print_absolute_paths(tmp_path: Path) -> None:
    write_config(tmp_path)
    for name in ("10-etc", "30-root", "40-crontabs"):
        out = subprocess.run(["sh", str(tmp_path / ETC / "pickers.d" / name)],
                             capture_output=True, check=True).stdout
        paths = [p for p in out.replace(b"\0", b"\n").split(b"\n") if p]
        assert all(p.startswith(b"/") for p in paths), (name, paths)
    assert b".cache" not in subprocess.run(
        ["sh", str(tmp_path / ETC / "pickers.d" / "30-root")], capture_output=True).stdout


def run_snapshotter(script: Path) -> tuple[bytes, str, int]:
    """As the archiver does: enabled (chmod +x), one argument, a high fd number."""
    script.chmod(0o755)
    read_fd, write_fd = os.pipe()
    high = fcntl_dup_high(write_fd)
    proc = subprocess.Popen([str(script), str(high)], pass_fds=(high,), stdout=subprocess.PIPE)
    os.close(high)
    with os.fdopen(read_fd, "rb") as data:
        payload = data.read()
    description = proc.stdout.read().decode()
    return payload, description, proc.wait()


def fcntl_dup_high(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 40)  # two digits: /bin/sh (dash) could not
    os.close(fd)
    return high


def test_packages_snapshotter_follows_the_contract(tmp_path: Path) -> None:
    if shutil.which("dpkg") is None and shutil.which("rpm") is None:
        pytest.skip("neither dpkg nor rpm here")
    write_config(tmp_path)
    script = tmp_path / ETC / "snapshots.d" / "10-packages"
    payload, description, status = run_snapshotter(script)
    assert status == 0
    assert payload.strip(), "no package list on the data fd"
    assert "::restore-through:: " in description


def test_sqlite_snapshotter_copies_a_live_database(tmp_path: Path) -> None:
    if shutil.which("sqlite3") is None:
        pytest.skip("sqlite3 is not installed")
    import sqlite3

    write_config(tmp_path)
    db = tmp_path / "app.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (x)")
        conn.execute("insert into t values (42)")
    script = tmp_path / ETC / "snapshots.d" / "40-sqlite"
    script.write_text(script.read_text().replace("/var/lib/myapp/app.sqlite3", str(db)))
    payload, description, status = run_snapshotter(script)
    assert status == 0 and "::restore-through:: " in description
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(payload)
    with sqlite3.connect(copy) as conn:
        assert conn.execute("select x from t").fetchall() == [(42,)]


def test_top_level_directories_are_the_packaged_data() -> None:
    repo = Path(__file__).resolve().parents[2]
    for name in ("systemd", "pickers.d.example", "snapshots.d.example"):
        link = repo / name
        assert link.is_symlink(), name
        assert link.resolve() == (repo / "s3archive" / "data" / name).resolve()


def test_non_editable_install_ships_units_and_examples(tmp_path: Path) -> None:
    """pip install . (not editable) into a fresh venv: write-config, run from
    outside the source tree, finds its units and examples and names its own
    executable in ExecStart."""
    repo = Path(__file__).resolve().parents[2]
    venv = tmp_path / "venv"
    _venv_seeing_this_environment(venv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-deps", str(repo)],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
    if install.returncode != 0:
        pytest.skip(f"pip cannot build the package here: {install.stderr.strip()[-300:]}")
    root = tmp_path / "root"
    run = subprocess.run([str(venv / "bin/s3archive"), "write-config", "--bucket", "acme-b",
                          "--root", str(root)], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    for name in PICKERS:
        assert (root / ETC / "pickers.d" / name).is_file()
    for name in SNAPSHOTTERS:
        assert (root / ETC / "snapshots.d" / name).is_file()
    service = _unit(root / UNITS / "s3archive.service")
    assert service["ExecStart"] == [f"{venv}/bin/s3archive --config /etc/s3archive/config.toml archive"]
    assert (root / UNITS / "s3archive.timer").is_file()


def _venv_seeing_this_environment(venv: Path) -> None:
    """A fresh venv whose interpreter also finds the packages installed for the
    one running the tests (click, boto3, ...).  `--system-site-packages` is not
    enough: inside a venv it inherits the *base* interpreter's packages, not
    this environment's.  A .pth line adds a directory to sys.path without
    processing its own .pth files, so an editable s3archive there stays
    invisible and the installed copy is the one that runs."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    inner = subprocess.run([str(venv / "bin/python"), "-c",
                            "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = [p for p in site.getsitepackages() + [site.getusersitepackages()] if Path(p).is_dir()]
    Path(inner, "_outer_environment.pth").write_text("".join(f"{p}\n" for p in outer))


def test_prints_the_retention_plan_with_the_first_run_tier(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    output = write_config(tmp_path, "--yearly-days", "1000")
    lines = output.splitlines()
    plan = lines[lines.index(next(line for line in lines if line.startswith("retention plan"))):]
    assert plan[0].startswith("retention plan (GOVERNANCE: an administrator with "
                              "s3:BypassGovernanceRetention can still remove a lock)")
    until = f"{datetime.now(timezone.utc) + timedelta(days=1000):%Y-%m-%d}"
    assert (f"the first run of a calendar year is yearly, locked 1000 days; the FIRST run on "
            f"this host is one: run today, it stays locked until {until}") in plan[1]
    assert "billed about $0.76 by then ($0.023 per GB-month)" in plan[1]
    assert "monthly, 400 days" in plan[2] and "daily, 14 days" in plan[2]
    assert "s3archive archive --dry-run" in plan[3]
    output = write_config(tmp_path / "c", "--lock-mode", "COMPLIANCE")
    assert "(COMPLIANCE: nobody, the AWS root account included, can shorten" in output


def _exposure(root: Path) -> float:
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--root={root}",
                           "--no-pager", "s3archive.service"], capture_output=True, text=True)
    found = re.search(r"Overall exposure level for s3archive\.service: (\d+\.\d)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr
    return float(found[1])


def test_service_is_rated_low_exposure_with_and_without_each_drop_in(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes`: 3.0 at most (OK), as shipped and
    with each snapshotter's drop-in enabled; each passes `verify` too."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    if subprocess.run(["systemd-analyze", "security", "--help"], capture_output=True,
                      text=True).stdout.find("--offline") < 0:
        pytest.skip("this systemd-analyze has no --offline")
    write_config(tmp_path, "--prometheus-textfile", "/var/lib/node-exporter/s3archive.prom")
    drop_ins = tmp_path / UNITS / "s3archive.service.d"
    examples = sorted(p.name for p in drop_ins.iterdir())
    assert examples == ["lvm.conf.example", "sqlite-wal.conf.example", "zfs.conf.example"]
    assert _exposure(tmp_path) <= 3.0
    for example in examples:
        enabled = drop_ins / example.removesuffix(".example")
        shutil.copy(drop_ins / example, enabled)
        assert _exposure(tmp_path) <= 3.0, example
        verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / UNITS /
                                                                  "s3archive.service")],
                                capture_output=True, text=True)
        complaints = [line for line in verify.stderr.splitlines()
                      if "s3archive.service.d" in line or "Unknown" in line]
        assert complaints == [], verify.stderr
        enabled.unlink()
    # The check can fail: the unhardened service of before rated 6.8 MEDIUM.
    service = tmp_path / UNITS / "s3archive.service"
    service.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\nProtectSystem=strict\n")
    assert _exposure(tmp_path) > 3.0


def test_prometheus_textfile_is_configured_and_writable(tmp_path: Path) -> None:
    output = write_config(tmp_path, "--prometheus-textfile",
                          "/var/lib/prometheus/node-exporter/s3archive.prom")
    config = load_config(tmp_path / ETC / "config.toml")
    assert config.report.prometheus_textfile == Path(
        "/var/lib/prometheus/node-exporter/s3archive.prom")
    service = _unit(tmp_path / UNITS / "s3archive.service")
    assert service["ReadWritePaths"] == [
        "/var/cache/s3archive /var/lib/s3archive -/var/lib/prometheus/node-exporter"]
    assert "created" in output
    output = write_config(tmp_path / "b", "--prometheus-textfile", "metrics.prom", code=2)
    assert "--prometheus-textfile metrics.prom: must be an absolute path" in output


def test_a_role_is_assumed_with_the_credentials_file(tmp_path: Path) -> None:
    write_config(tmp_path, "--credentials-file", "/etc/s3archive/credentials",
                 "--role-arn", "arn:aws:iam::123456789012:role/backup")
    config = load_config(tmp_path / ETC / "config.toml")
    assert config.s3.role_arn == "arn:aws:iam::123456789012:role/backup"
    assert config.s3.credentials_file == tmp_path / ETC / "credentials"
