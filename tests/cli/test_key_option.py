"""``--key FILE`` / ``$S3ARCHIVE_KEY_FILE``: one shared option on every command
that reads run content; a key file that cannot be used is one line naming
the file (never the key) and exit 2; a good one works (RGW) and lands in the
repository context."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from s3archive.cli import context
from s3archive.cli.main import cli
from s3archive.crypto.keys import Identity, paper_lines, paper_sheet
from support.manifest_builder import RunBuilder, make_bucket_env

RUN = "20260501T020000Z"
# Each command with arguments that reach its body; mount needs FUSE and a
# mount point, so it is only shown failing on a bad key, before it mounts.
COMMANDS = {
    "restore": ["restore", "latest", "--target", "{tmp}/restored"],
    "ls": ["ls", "latest"],
    "show": ["show", "latest"],
    "diff": ["diff", RUN, "latest"],
    "cat": ["cat", "latest", "/a"],
    "dump": ["dump", "latest", "--output", "{tmp}/a.tar"],
    "find": ["find", "a"],
    "history": ["history", "/a"],
    "mount": ["mount", "{tmp}/mnt"],
    "cat-snapshot": ["cat-snapshot", "latest", "10-db"],
    "restore-snapshot": ["restore-snapshot", "latest", "10-db", "--yes"],
    "verify": ["verify", "--read-data"],
}
_KEY = str(Identity.generate())
TYPO_KEY = _KEY[:-1] + ("Q" if _KEY[-1] != "Q" else "P")
WITHOUT_KEY = ("runs", "status", "cost", "fleet", "prune", "hold", "release")


def _cli(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [a.replace("{tmp}", str(tmp)) for a in args],
                              catch_exceptions=False, env=env, prog_name="s3archive")


def _key_file(path: Path, mode: int = 0o600) -> Identity:
    identity = Identity.generate()
    path.write_text(identity.file_text())
    path.chmod(mode)
    return identity


def test_key_is_one_shared_option_on_the_readers_only() -> None:
    helps = set()
    for name in COMMANDS:
        option = next(p for p in cli.commands[name].params if p.name == "key_file")
        assert option.opts == ["--key"] and option.envvar == "S3ARCHIVE_KEY_FILE"
        helps.add(option.help)
        assert "S3ARCHIVE_KEY_FILE" in _cli([name, "--help"], Path("/")).stdout
    assert len(helps) == 1
    for name in WITHOUT_KEY:
        assert all(p.name != "key_file" for p in cli.commands[name].params), name


def _bad_key_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the one line says)"""
    public = tmp / "public.txt"
    public.write_text(f"# a recipient is not a key\n{Identity.generate().recipient()}\n")
    empty = tmp / "empty.key"
    empty.write_text("# created: 2026-01-01T00:00:00Z\n\n")
    typo = tmp / "typo.key"
    typo.write_text(TYPO_KEY + "\n")
    unreadable = tmp / "unreadable.key"
    _key_file(unreadable, 0o000)
    binary = tmp / "binary.key"
    binary.write_bytes(b"\x00\xff" * 10)
    return {"missing": (tmp / "nothing.key", "key file not found (--key)"),
            "directory": (tmp, "a directory, not a key file (--key)"),
            "public": (public, "line 2: not an age X25519 secret key"),
            "empty": (empty, "no secret key in it"),
            "typo": (typo, "line 1: secret key: checksum mismatch"),
            "unreadable": (unreadable, "permission denied reading the key file (--key)"),
            "binary": (binary, "not a key file (not ASCII text)")}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_key_file_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    """Checked before the configuration is read: no bucket is needed to see it."""
    config = tmp_path / "config.toml"
    config.write_text('[s3]\nbucket = "nowhere"\nendpoint_url = "http://127.0.0.1:9"\n')
    (tmp_path / "mnt").mkdir()
    cases = _bad_key_files(tmp_path)
    if os.geteuid() == 0:
        cases.pop("unreadable")  # root reads a 0000 file
    for name, (path, why) in cases.items():
        result = _cli(["--config", str(config), *COMMANDS[command], "--key", str(path)],
                      tmp_path)
        assert result.exit_code == 2, (name, result.output)
        assert result.stderr.startswith(f"s3archive: error: {path}: {why}"), (name, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert TYPO_KEY[16:40] not in result.stderr.upper()  # never key material


def test_the_environment_variable_is_named_when_it_is_the_source(tmp_path: Path) -> None:
    missing = tmp_path / "gone.key"
    result = _cli(["ls", "latest"], tmp_path, env={"S3ARCHIVE_KEY_FILE": str(missing)})
    assert result.exit_code == 2
    assert result.stderr == (f"s3archive: error: {missing}: key file not found "
                             "($S3ARCHIVE_KEY_FILE)\n")


def test_a_key_is_never_echoed_by_a_bad_line(tmp_path: Path) -> None:
    good = Identity.generate()
    path = tmp_path / "two.key"
    path.write_text(f"{good}\nAGE-SECRET-KEY-1 broken\n")
    result = _cli(["ls", "latest", "--key", str(path)], tmp_path)
    assert result.exit_code == 2 and str(good) not in result.stderr
    assert result.stderr.startswith(f"s3archive: error: {path}: line 2: ")


def test_a_typed_paper_copy_is_a_key(tmp_path: Path) -> None:
    """The bad day's restore starts from the sheet: its numbered lines, typed
    in (any case, the rest of the sheet pasted along or not), are a key."""
    identity = Identity.generate()
    typed = tmp_path / "typed.txt"
    typed.write_text("\n".join(line.lower() for line in paper_lines(identity)) + "\n")
    assert context.load_identities(typed, "--key") == [identity]
    typed.write_text(paper_sheet(identity))
    assert context.load_identities(typed, "--key") == [identity]


def test_a_paper_copy_that_does_not_check_names_the_lines(tmp_path: Path) -> None:
    identity = Identity.generate()
    lines = paper_lines(identity)
    wrong = lines[1][:3] + ("Q" if lines[1][3] != "Q" else "P") + lines[1][4:]
    typed = tmp_path / "typed.txt"
    typed.write_text("\n".join([lines[0], wrong, *lines[2:]]) + "\n")
    result = _cli(["ls", "latest", "--key", str(typed)], tmp_path)
    assert result.exit_code == 2
    assert result.stderr == (f"s3archive: error: {typed}: a paper copy that does not check: "
                             "line 2: check digits do not match: a character of this line is "
                             "wrong, or the digits (s3archive key check FILE names each line "
                             "to retype)\n")
    typed.write_text("\n".join(lines[:-1]) + "\n")  # the last line forgotten
    result = _cli(["ls", "latest", "--key", str(typed)], tmp_path)
    assert result.exit_code == 2 and "the whole key does not" in result.stderr


@pytest.fixture(scope="module")
def bucket(rgw, tmp_path_factory):
    env = make_bucket_env(rgw, tmp_path_factory.mktemp("keyopt"))
    run = RunBuilder(env.store, run_id=RUN)
    run.dir(b"/")
    run.file(b"/a", b"a\n")
    run.snapshot("10-db", b"dump\n", restore_through="cat > /dev/null")
    run.upload()
    return env


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "mount"])
def test_each_reader_takes_a_good_key(bucket, tmp_path: Path, command: str) -> None:
    key = tmp_path / "restore.key"
    _key_file(key)
    result = _cli(["--config", str(bucket.config_path), *COMMANDS[command], "--key", str(key)],
                  tmp_path)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    # The same through the environment.
    env = {"S3ARCHIVE_KEY_FILE": str(key)}
    if command == "restore":
        env_args = ["restore", "latest", "--target", str(tmp_path / "again")]
    elif command == "dump":
        env_args = ["dump", "latest", "--output", str(tmp_path / "b.tar")]
    else:
        env_args = COMMANDS[command]
    result = _cli(["--config", str(bucket.config_path), *env_args], tmp_path, env=env)
    assert result.exit_code == 0, result.output


def test_identities_reach_the_repository(bucket, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "two.key"
    first, second = Identity.generate(), Identity.generate()
    key.write_text(first.file_text() + second.file_text())
    key.chmod(0o600)
    seen: list[list[Identity]] = []
    real = context.Repository.run

    def spy(repo: context.Repository, spec: str):  # type: ignore[no-untyped-def]
        seen.append(repo.identities)
        return real(repo, spec)

    monkeypatch.setattr(context.Repository, "run", spy)
    assert _cli(["--config", str(bucket.config_path), "show", "latest", "--key", str(key)],
                tmp_path).exit_code == 0
    assert _cli(["--config", str(bucket.config_path), "show", "latest"],
                tmp_path).exit_code == 0
    assert seen == [[first, second], []]
    assert str(first) not in repr(seen[0]) and "recipient=age1" in repr(seen[0])


def test_a_key_file_others_may_read_is_used_with_a_warning(bucket, tmp_path: Path) -> None:
    key = tmp_path / "stick.key"
    _key_file(key, 0o644)
    result = _cli(["--config", str(bucket.config_path), "ls", "latest", "--key", str(key)],
                  tmp_path)
    assert result.exit_code == 0, result.output
    assert (f"s3archive: warning: {key}: the key file is accessible by group or others "
            "(mode 0644); chmod 600 it, or keep it offline\n") in result.stderr
