"""``s3archive key``: generate (0600, never overwrite), recipient, paper check,
through the real CLI; bad input gets one line and exit code 2 or 1."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner, Result

from s3archive.cli.main import cli
from s3archive.crypto.keys import Identity, Recipient, read_identity_file


def _key(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["key", *args], input=input, catch_exceptions=False)


def _one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("s3archive: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_generate_writes_0600_and_prints_only_the_recipient(tmp_path: Path) -> None:
    out = tmp_path / "restore.key"
    result = _key("generate", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    (identity,) = read_identity_file(out)
    assert result.stdout == f"{identity.recipient()}\n"
    Recipient.parse(result.stdout)
    assert f"# public key: {identity.recipient()}" in out.read_text()


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "restore.key"
    out.write_text("precious\n")
    result = _key("generate", "--out", str(out))
    assert result.exit_code == 1
    assert "exists: refusing to overwrite" in _one_error_line(result)
    assert out.read_text() == "precious\n"
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "elsewhere.key")  # dangling: O_EXCL refuses it too
    assert _key("generate", "--out", str(link)).exit_code == 1
    assert not (tmp_path / "elsewhere.key").exists()


def test_paper_copy_typed_back_checks(tmp_path: Path) -> None:
    out = tmp_path / "restore.key"
    result = _key("generate", "--out", str(out), "--paper")
    assert result.exit_code == 0, result.stderr
    recipient = result.stdout.splitlines()[0]
    numbered = [line for line in result.stdout.splitlines() if line[:2] in ("1:", "2:", "3:",
                                                                           "4:")]
    assert len(numbered) == 4
    (identity,) = read_identity_file(out)
    assert str(identity)[16:] == "".join(line[3:-4].replace(" ", "") for line in numbered)
    sheet = tmp_path / "sheet.txt"  # the whole sheet, as printed, checks too
    sheet.write_text(result.stdout)
    assert _key("check", str(sheet), "--recipient", recipient).stdout == recipient + "\n"
    typed = tmp_path / "typed.txt"
    typed.write_text("\n".join(numbered).lower() + "\n")
    result = _key("check", str(typed), "--recipient", recipient)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == recipient + "\n"
    # one character mistyped on line 3: that line is named, exit 1
    chars = list(numbered[2])
    chars[5] = "Q" if chars[5] != "Q" else "P"
    typed.write_text("\n".join([*numbered[:2], "".join(chars), numbered[3]]) + "\n")
    result = _key("check", str(typed))
    assert result.exit_code == 1
    assert "line 3: check digits do not match" in result.stderr
    assert "does not check" in _one_error_line(result)
    assert result.stdout == ""


def test_check_reads_stdin_and_compares_the_recipient(tmp_path: Path) -> None:
    identity, other = Identity.generate(), Identity.generate()
    result = _key("check", "-", "--recipient", str(other.recipient()), input=str(identity))
    assert result.exit_code == 1
    assert f"belongs to {identity.recipient()}, not {other.recipient()}" in \
        _one_error_line(result)
    result = _key("check", "-", "--recipient", "age1nonsense", input=str(identity))
    assert result.exit_code == 2
    assert "age1nonsense" in _one_error_line(result)


def test_recipient_of_a_bad_file_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("# comment\nAGE-SECRET-KEY-1QQQQ\n")
    result = _key("recipient", str(bad))
    assert result.exit_code == 2
    assert f"{bad}: line 2: secret key" in _one_error_line(result)
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe" * 10)
    result = _key("recipient", str(binary))
    assert result.exit_code == 2 and "not ASCII" in _one_error_line(result)
    big = tmp_path / "big.key"
    big.write_bytes(b"#" * 70000)
    result = _key("recipient", str(big))
    assert result.exit_code == 2 and "larger than" in _one_error_line(result)
