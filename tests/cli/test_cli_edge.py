"""The CLI's edge, through the real CLI: one line per error with the right
exit code, global options on either side of the command, help that is not
cut, shell completion and man pages."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3archive.cli.main import cli
from support.manifest_builder import RunBuilder, make_bucket_env


def run_cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env,
                              prog_name="s3archive")


@pytest.fixture(scope="module")
def bucket(rgw, tmp_path_factory):
    env = make_bucket_env(rgw, tmp_path_factory.mktemp("edge"))
    run = RunBuilder(env.store, run_id="20260501T020000Z")
    run.dir(b"/")
    run.file(b"/a", b"a\n")
    run.upload()
    return env


def test_global_options_before_or_after_the_command(bucket) -> None:
    before = run_cli("--config", str(bucket.config_path), "runs", "--json")
    after = run_cli("runs", "--json", "--config", str(bucket.config_path))
    assert before.exit_code == after.exit_code == 0, after.output
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert [r["run_id"] for r in json.loads(after.stdout)] == ["20260501T020000Z"]
    # the later --config wins, as the nearer option does in git or docker
    wrong = run_cli("--config", "/nonexistent/config.toml", "runs", "--config",
                    str(bucket.config_path))
    assert wrong.exit_code == 0, wrong.output
    missing = run_cli("runs", "--config", "/nonexistent/config.toml")
    assert missing.exit_code == 2 and "/nonexistent/config.toml" in missing.stderr


def test_quiet_and_verbose_after_the_command(bucket) -> None:
    import logging

    level = logging.getLogger("s3archive").getEffectiveLevel
    plain = run_cli("runs", "--config", str(bucket.config_path))
    assert plain.exit_code == 0 and level() == logging.INFO
    loud = run_cli("show", "latest", "-v", "--config", str(bucket.config_path))
    assert loud.exit_code == 0, loud.output
    assert level() == logging.DEBUG
    quiet = run_cli("runs", "-q", "--config", str(bucket.config_path))
    assert quiet.exit_code == 0 and level() == logging.WARNING


def test_host_is_one_shared_option() -> None:
    helps = {}
    for name in ("ls", "show", "diff", "hold", "release", "restore", "cat-snapshot",
                 "restore-snapshot", "verify"):
        option = next(p for p in cli.commands[name].params if p.name == "host")
        helps[name] = option.help
        assert "--host" in run_cli(name, "--help").stdout
    assert len(set(helps.values())) == 1, helps


def test_top_level_help_does_not_cut_descriptions() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    assert "EXIT STATUS" in result.stdout
    commands = result.stdout.split("Commands:\n", 1)[1]
    assert "..." not in commands
    assert "daily timer, then enable the timer." in " ".join(commands.split())


@pytest.mark.parametrize("command", ["archive", "runs", "status", "verify", "restore",
                                     "prune", "cost", "hold", "ls", "diff"])
def test_every_command_documents_its_exit_status(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.exit_code == 0
    assert "EXIT STATUS" in result.stdout


def test_unknown_profile_is_a_configuration_error_in_one_line(bucket, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    text = bucket.config_path.read_text()
    config.write_text("\n".join('profile = "no-such-profile"' if line.startswith(
        "credentials_file") else line for line in text.splitlines()) + "\n")
    aws_env = {"AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials")}
    result = run_cli("--config", str(config), "runs", env=aws_env)
    assert result.exit_code == 2
    assert result.stderr == ('s3archive: error: AWS profile "no-such-profile" is not in '
                             "~/.aws/config or ~/.aws/credentials (s3.profile; "
                             "ProfileNotFound)\n")


def test_wrong_bucket_is_named(bucket, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(bucket.config_path.read_text().replace(
        f'bucket = "{bucket.bucket}"', 'bucket = "x-no-such-bucket"'))
    for args in (["runs"], ["show", "latest"], ["verify"], ["cost"]):
        result = run_cli("--config", str(config), *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == ('s3archive: error: bucket "x-no-such-bucket" does not exist '
                                 "(NoSuchBucket)\n"), args


def test_completion_scripts_complete_commands_and_options() -> None:
    for shell in ("bash", "zsh", "fish"):
        result = run_cli("completion", shell)
        assert result.exit_code == 0
        assert "_S3ARCHIVE_COMPLETE" in result.stdout
    if shutil.which("bash"):
        script = run_cli("completion", "bash").stdout
        checked = subprocess.run(["bash", "-n"], input=script, text=True,
                                 capture_output=True, check=False)
        assert checked.returncode == 0, checked.stderr
    # What the installed script asks the program, the program answers:
    words = run_cli(env={"_S3ARCHIVE_COMPLETE": "bash_complete", "COMP_WORDS": "s3archive re",
                         "COMP_CWORD": "1"})
    assert words.stdout.split() == ["plain,release", "plain,restore", "plain,restore-snapshot"]
    options = run_cli(env={"_S3ARCHIVE_COMPLETE": "bash_complete",
                           "COMP_WORDS": "s3archive runs --all", "COMP_CWORD": "2"})
    assert options.stdout.split() == ["plain,--all-hosts"]
    unknown = run_cli("completion", "tcsh")
    assert unknown.exit_code == 2


def test_man_pages_for_every_command(tmp_path: Path) -> None:
    result = run_cli("man", "--out", str(tmp_path / "man1"))
    assert result.exit_code == 0, result.output
    pages = {p.name: p.read_text() for p in (tmp_path / "man1").iterdir()}
    assert set(pages) == {"s3archive.1"} | {f"s3archive-{name}.1" for name in cli.commands}
    runs = pages["s3archive-runs.1"]
    assert runs.startswith('.TH "S3ARCHIVE-RUNS" "1"')
    assert "\\-\\-all\\-hosts" in runs and "EXIT STATUS" in runs
    assert "s3archive\\-runs(1)" in pages["s3archive.1"].replace("\\fB", "").replace("\\fR", "")
    if shutil.which("groff"):
        for name in ("s3archive.1", "s3archive-runs.1", "s3archive-restore.1"):
            rendered = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(tmp_path / "man1" /
                                                                              name)],
                                      capture_output=True, text=True, check=False)
            assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
            assert "EXIT STATUS" in rendered.stdout


def test_archive_with_warnings_exits_3_and_every_line_is_prefixed(rgw, tmp_path: Path) -> None:
    from support.archive_env import ArchiveEnv

    env = ArchiveEnv(tmp_path, rgw.endpoint_url, rgw.access_key, rgw.secret_key, rgw.client())
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("f\n")
    env.pick(data, tmp_path / "no-such-path")
    result = env.run("archive", "-q")
    assert result.exit_code == 3, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("s3archive: warning: ") for line in lines), lines
    assert "no-such-path" in lines[0]
    run_id = json.loads(env.run("runs", "--json").stdout)[0]["run_id"]
    assert lines[-1] == (f"s3archive: warning: manifest runs/testhost/{run_id}.jsonl.zst "
                         "written with 1 warning(s): some sources failed")
