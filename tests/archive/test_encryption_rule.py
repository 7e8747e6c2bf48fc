"""The mixing rule (docs/FORMAT2.md 11), every case: no silent switch between
plain and encrypted runs of one host; one recorded switch to encrypted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from s3archive.archive.encryption_rule import (
    EncryptionMixError,
    EncryptionMode,
    RunEncryption,
    decide_encryption,
    mixing_problems,
)
from s3archive.config import EncryptionConfig, dedup_secret_file_text
from s3archive.crypto.dedup import DedupSecret
from s3archive.crypto.keys import Identity
from s3archive.errors import EXIT_USAGE

OPERATOR = Identity(bytes(range(32))).recipient()
ESCROW = Identity(bytes(range(1, 33))).recipient()
SECRET = DedupSecret(bytes(32))


@pytest.fixture
def config(tmp_path: Path) -> EncryptionConfig:
    path = tmp_path / "dedup.key"
    path.write_text(dedup_secret_file_text(SECRET))
    path.chmod(0o600)
    return EncryptionConfig(recipients=(OPERATOR, ESCROW), dedup_secret_file=path)


def _header(recipients: list[Any] | None = None, dedup_id: Any = SECRET.dedup_id) -> dict[str, Any]:
    return {"scheme": "age-x25519/chacha20poly1305/hmac-sha256",
            "recipients": recipients if recipients is not None else [str(ESCROW), str(OPERATOR)],
            "dedup_id": dedup_id, "dedup_key": {"key": "keys/dedup/x/y.age"}}


def test_plain_stays_plain() -> None:
    decision = decide_encryption("web1", None, None, False)
    assert decision.mode is EncryptionMode.PLAIN and not decision.encrypt
    assert not decision.encryption_started and decision.notes == ()


def test_encrypted_stays_encrypted_silently_with_the_same_keys(config: EncryptionConfig) -> None:
    decision = decide_encryption("web1", _header(), config, False)
    assert decision.mode is EncryptionMode.ENCRYPTED and decision.encrypt
    assert not decision.encryption_started and decision.notes == ()


def test_encrypted_to_plain_is_refused_with_exit_2() -> None:
    with pytest.raises(EncryptionMixError) as caught:
        decide_encryption("web1", _header(), None, False)
    assert str(caught.value) == ("host web1's runs are encrypted; the configuration has no "
                                 "[encryption] section (refusing to write a plain run)")
    assert caught.value.exit_code == EXIT_USAGE


def test_plain_to_encrypted_needs_the_flag(config: EncryptionConfig) -> None:
    with pytest.raises(EncryptionMixError) as caught:
        decide_encryption("web1", None, config, False)
    assert str(caught.value).startswith("host web1's runs are plain; the configuration has an "
                                        "[encryption] section: give archive --start-encryption")
    assert caught.value.exit_code == EXIT_USAGE


def test_the_flag_switches_once_and_records_it(config: EncryptionConfig) -> None:
    decision = decide_encryption("web1", None, config, True)
    assert decision.mode is EncryptionMode.STARTED
    assert decision.encrypt and decision.encryption_started
    assert "switching from plain to encrypted" in decision.notes[0]


def test_the_flag_on_an_encrypted_host_changes_nothing(config: EncryptionConfig) -> None:
    decision = decide_encryption("web1", _header(), config, True)
    assert decision.mode is EncryptionMode.ENCRYPTED and not decision.encryption_started
    assert decision.notes == ("host web1's runs are encrypted already: --start-encryption "
                              "changes nothing",)


@pytest.mark.parametrize("latest", [None, _header()], ids=["plain", "encrypted"])
@pytest.mark.parametrize("first_run", [False, True])
def test_the_flag_without_the_section_is_refused(latest: Any, first_run: bool) -> None:
    with pytest.raises(EncryptionMixError, match=r"^--start-encryption needs an \[encryption\]"):
        decide_encryption("web1", latest, None, True, first_run=first_run)


def test_a_first_run_follows_the_configuration(config: EncryptionConfig) -> None:
    assert decide_encryption("new", None, None, False, first_run=True).mode \
        is EncryptionMode.PLAIN
    encrypted = decide_encryption("new", None, config, False, first_run=True)
    assert encrypted.mode is EncryptionMode.ENCRYPTED and encrypted.notes == ()
    flagged = decide_encryption("new", None, config, True, first_run=True)
    assert flagged.mode is EncryptionMode.ENCRYPTED and not flagged.encryption_started
    assert flagged.notes == ("host new has no run yet: --start-encryption is not needed",)


@pytest.mark.parametrize("recipients", [[str(OPERATOR)], [str(OPERATOR), str(ESCROW), "age1x"],
                                        "not a list", [1, 2]],
                         ids=["one-removed", "one-more", "not-a-list", "not-strings"])
def test_a_change_of_recipients_is_allowed_and_noted(config: EncryptionConfig,
                                                     recipients: Any) -> None:
    decision = decide_encryption("web1", _header(recipients), config, False)
    assert decision.mode is EncryptionMode.ENCRYPTED
    (note,) = decision.notes
    assert note.startswith("host web1: the recipients change with this run")
    assert str(OPERATOR) in note and str(ESCROW) in note


def test_recipients_in_another_order_or_case_are_no_change(config: EncryptionConfig) -> None:
    header = _header([str(OPERATOR), str(ESCROW), str(OPERATOR)])
    assert decide_encryption("web1", header, config, False).notes == ()


@pytest.mark.parametrize("dedup_id", [DedupSecret(bytes([1]) * 32).dedup_id, None, 7])
def test_a_change_of_dedup_group_is_allowed_and_noted(config: EncryptionConfig,
                                                      dedup_id: Any) -> None:
    decision = decide_encryption("web1", _header(dedup_id=dedup_id), config, False)
    assert decision.mode is EncryptionMode.ENCRYPTED
    (note,) = decision.notes
    assert note == (f"host web1: the dedup group changes with this run (now "
                    f"{SECRET.dedup_id}): data stored under the former group is uploaded again")


def test_a_header_that_is_not_an_object_still_counts_as_encrypted(
        config: EncryptionConfig) -> None:
    """Only null means plain: a malformed header never lets a plain run through."""
    with pytest.raises(EncryptionMixError, match="runs are encrypted"):
        decide_encryption("web1", "garbage", None, False)  # type: ignore[arg-type]
    decision = decide_encryption("web1", "garbage", config, False)  # type: ignore[arg-type]
    assert decision.mode is EncryptionMode.ENCRYPTED and len(decision.notes) == 2


def test_verify_names_every_silent_switch_in_a_hosts_runs() -> None:
    enc, plain = _header(), None
    runs = [RunEncryption("r1", plain), RunEncryption("r2", enc, encryption_started=True),
            RunEncryption("r3", enc), RunEncryption("r4", plain), RunEncryption("r5", enc),
            RunEncryption("r6", enc, encryption_started=True)]
    assert mixing_problems("web1", runs) == [
        "host web1: run r4 is plain after the encrypted run r3",
        "host web1: run r5 is encrypted after the plain run r4 without recording the switch "
        "(encryption_started)"]
    assert mixing_problems("web1", runs[:3]) == []
    assert mixing_problems("web1", [RunEncryption("r1", enc)]) == []
    assert mixing_problems("web1", []) == []
    # a first run may be encrypted without the flag; a flag on an encrypted host is harmless
    assert mixing_problems("web1", [RunEncryption("r1", enc), RunEncryption("r2", enc, True)]) \
        == []
