"""CLI conventions: one-line errors with documented exit codes, --help everywhere,
secrets only where asked for, terminals refused, 0600 files, --force, PINs."""

from __future__ import annotations

import argparse
import base64
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from test_seal_support import (
    CliResult,
    assert_one_line_error,
    cli,
    cli_subprocess,
    extend,
    secret_bytes,
    write,
)
from tpmseal.cli.main import build_parser
from tpmseal.errors import ExitCode
from tpmseal.transport.simulator import Simulator


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                   ) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(build_parser())


def test_every_subcommand_listed() -> None:
    names = {p[0] for p in COMMANDS if p}
    assert {"seal", "unseal", "reseal", "import", "pcrs", "vault-key", "provision"} <= names
    assert ("pcrs", "show") in COMMANDS and ("pcrs", "recover") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "tpmseal")
def test_help(path: tuple[str, ...]) -> None:
    r = cli([*path, "--help"])
    assert (r.rc, r.err) == (0, "")
    text = r.out.decode()
    assert text.startswith("usage: tpmseal" + "".join(f" {p}" for p in path))


# ----------------------------------------------------------------- failures


@pytest.fixture
def blob(tcg_sim: Simulator, tmp_path: Path) -> Path:
    key = write(tmp_path / "key", secret_bytes())
    out = tmp_path / "b.json"
    assert cli(["seal", "--input", str(key), "--output", str(out)]).rc == 0
    return out


def _failures(tmp: Path, blob: Path) -> list[tuple[list[str], int, str]]:
    key = str(write(tmp / "key2", secret_bytes()))
    big = str(write(tmp / "big", os.urandom(129)))
    empty = str(write(tmp / "empty", b""))
    garbage = str(write(tmp / "trust-garbage.json", b"{not json"))
    out = str(tmp / "new.json")
    return [
        ([], 2, "the following arguments are required"),
        (["frobnicate"], 2, "invalid choice"),
        (["seal", "--input", key], 2, "one of the arguments --output --nv is required"),
        (["seal", "--nv", "--output", out, "--input", key], 2, "not allowed with"),
        (["seal", "--input", key, "--output", str(blob)], 2, "already holds a sealed secret"),
        (["seal", "--input", empty, "--output", out], 2, "is empty"),
        (["seal", "--input", big, "--output", out], 2, "at most 128"),
        (["seal", "--nv", "--input", key], 2, "has no NV layout"),
        (["--tpm", "bogus", "unseal", "--input", str(blob)], 2, "bad TPM URI"),
        (["--tpm", f"unix:{tmp}/none.sock", "unseal", "--input", str(blob)], 3,
         "no TPM socket"),
        (["--trust-file", str(tmp / "none.json"), "seal", "--input", key, "--output", out],
         11, "no trusted endorsement key"),
        (["--trust-file", garbage, "seal", "--input", key, "--output", out], 7, "not JSON"),
        (["unseal", "--input", str(tmp / "none.json")], 11, "no sealed secret"),
        (["unseal", "--input", str(blob), "--pin-file", str(tmp / "nopin")], 2,
         "does not exist"),
        (["vault-key", "--profile", "tcg"], 11, "keeps no vault key"),
        (["reseal", "--input", str(blob), "--nv"], 2, "not allowed with"),
        (["pcrs", "show", "--pcrs", "sha256:99"], 2, "outside 0-23"),
    ]


def test_failures_are_one_line(blob: Path, tmp_path: Path) -> None:
    for argv, code, needle in _failures(tmp_path, blob):
        r = cli(argv)
        assert_one_line_error(r, code, needle)
        assert r.out == b"", argv


def test_failures_in_a_real_process(blob: Path, tmp_path: Path) -> None:
    """The same shape from a child process: no traceback reaches the terminal."""
    for argv, code, needle in _failures(tmp_path, blob)[::3]:
        r = cli_subprocess(argv)
        assert_one_line_error(r, code, needle)
    # --debug adds the traceback
    r = cli_subprocess(["--debug", "unseal", "--input", str(tmp_path / "none.json")])
    assert r.rc == ExitCode.NOT_FOUND
    assert "Traceback" in r.err
    assert r.err.rstrip().splitlines()[-1].startswith("tpmseal: error: no sealed secret")


def test_argparse_errors_name_the_subcommand(tcg_sim: Simulator) -> None:
    r = cli(["unseal", "--input", "b.json", "--nope"])
    assert_one_line_error(r, 2, "unrecognized arguments: --nope")
    assert r.err.startswith("tpmseal: error: ")  # unknown options are the top parser's
    r = cli(["pcrs", "recover"])
    assert_one_line_error(r, 2, "one of the arguments --input --nv is required")
    assert r.err.startswith("tpmseal pcrs recover: error: ")


# ---------------------------------------------------------------------- secrets


def _spellings(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), secret.hex().upper().encode(),
            base64.b64encode(secret), base64.b64encode(secret).rstrip(b"=")]


def test_secret_only_in_unseal_output(eve_sim: Simulator, tmp_path: Path) -> None:
    secret = secret_bytes()
    pin = b"pin-that-must-not-show"
    key = write(tmp_path / "key", secret)
    pinf = write(tmp_path / "pin", pin + b"\n")
    blob = str(tmp_path / "b.json")
    runs: list[tuple[list[str], bool]] = [
        (["seal", "--profile", "eve", "--input", str(key), "--output", blob], False),
        (["seal", "--profile", "eve", "--nv", "--pin-file", str(pinf)], False),
        (["seal", "--profile", "eve", "--input", "-", "--output", blob, "--force"], False),
        (["unseal", "--profile", "eve", "--input", blob], True),
        (["unseal", "--profile", "eve", "--nv", "--pin-file", str(pinf)], True),
        (["reseal", "--profile", "eve", "--input", blob, "--pcrs", "sha256:0,4,7"], False),
        (["reseal", "--profile", "eve", "--nv", "--pin-file", str(pinf), "--pcrs",
          "sha256:0,4"], False),
        (["pcrs", "show", "--profile", "eve"], False),
        (["unseal", "--profile", "eve", "--nv", "--pcrs", "sha256:0,4", "--pin-file",
          str(pinf)], True),
    ]
    for argv, prints in runs:
        # --debug: the most verbose logging there is
        r = cli_subprocess(["--debug", *argv], stdin=secret)
        assert r.rc == 0, (argv, r.err)
        assert r.out == (secret if prints else r.out), argv
        for s in _spellings(secret) + _spellings(pin):
            assert s not in r.err.encode(), argv
            if not prints:
                assert s not in r.out, argv
    # failures do not show it either
    extend(eve_sim.uri, 4)
    for argv in (["--debug", "unseal", "--profile", "eve", "--input", blob],
                 ["--debug", "unseal", "--profile", "eve", "--nv", "--no-recover", "--pcrs",
                  "sha256:0,4", "--pin-file", str(pinf)]):
        r = cli_subprocess(argv)
        assert r.rc == ExitCode.PCR_MISMATCH and r.out == b""
        assert not any(s in r.err.encode() for s in _spellings(secret) + _spellings(pin))


def _run_on_pty(argv: list[str]) -> tuple[int, bytes, str]:
    """Run tpmseal with its stdout on a pseudo-terminal; returns code, tty output, stderr."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "tpmseal.cli.main", *argv], stdout=slave,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        _, err = p.communicate(timeout=60)
    finally:
        os.close(master)
    return p.returncode, b"".join(chunks), err.decode()


def test_unseal_refuses_a_terminal(blob: Path) -> None:
    rc, shown, err = _run_on_pty(["unseal", "--input", str(blob)])
    r = CliResult(rc, shown, err)
    assert_one_line_error(r, 2, "refusing to print the secret on a terminal", "--output -")
    assert shown == b""
    rc, shown, err = _run_on_pty(["unseal", "--input", str(blob), "--output", "-"])
    assert rc == 0 and err == ""
    assert len(shown) >= 32  # the tty may translate bytes; what matters is it was allowed


def test_vault_key_refuses_a_terminal(eve_sim: Simulator) -> None:
    rc, shown, err = _run_on_pty(["vault-key"])
    assert_one_line_error(CliResult(rc, shown, err), 2, "refusing to print")
    assert shown == b""


# ------------------------------------------------------------------ files, force


def test_output_files_are_0600(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob, out = tmp_path / "b.json", tmp_path / "out.key"
    out.write_bytes(b"old")
    out.chmod(0o644)
    old_umask = os.umask(0)
    try:
        assert cli(["seal", "--input", str(key), "--output", str(blob)]).rc == 0
        r = cli(["unseal", "--input", str(blob), "--output", str(out)])
    finally:
        os.umask(old_umask)
    assert (r.rc, r.out) == (0, b"")
    assert out.read_bytes() == key.read_bytes()
    assert out.stat().st_mode & 0o777 == 0o600
    assert blob.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "key", "out.key"]


def test_seal_refuses_overwrite_without_force(tcg_sim: Simulator, tmp_path: Path) -> None:
    key1 = write(tmp_path / "k1", secret_bytes())
    key2 = write(tmp_path / "k2", secret_bytes())
    blob = tmp_path / "b.json"
    assert cli(["seal", "--input", str(key1), "--output", str(blob)]).rc == 0
    before = blob.read_bytes()
    r = cli(["seal", "--input", str(key2), "--output", str(blob)])
    assert_one_line_error(r, 2, "already holds a sealed secret", "--force")
    assert blob.read_bytes() == before
    assert cli(["seal", "--force", "--input", str(key2), "--output", str(blob)]).rc == 0
    assert cli(["unseal", "--input", str(blob)]).out == key2.read_bytes()


def test_seal_nv_refuses_overwrite_without_force(eve_sim: Simulator, tmp_path: Path) -> None:
    key1 = write(tmp_path / "k1", secret_bytes())
    key2 = write(tmp_path / "k2", secret_bytes())
    assert cli(["seal", "--profile", "eve", "--nv", "--input", str(key1)]).rc == 0
    r = cli(["seal", "--profile", "eve", "--nv", "--input", str(key2)])
    assert_one_line_error(r, 2, "NV 0x1800000/0x1900000 already holds a sealed secret")
    assert cli(["unseal", "--profile", "eve", "--nv"]).out == key1.read_bytes()
    assert cli(["seal", "--profile", "eve", "--nv", "--force", "--input", str(key2)]).rc == 0
    assert cli(["unseal", "--profile", "eve", "--nv"]).out == key2.read_bytes()


def test_secret_from_stdin(tcg_sim: Simulator, tmp_path: Path) -> None:
    secret = secret_bytes()
    blob = tmp_path / "b.json"
    assert cli(["seal", "--output", str(blob)], stdin=secret).rc == 0
    assert cli(["unseal", "--input", str(blob)]).out == secret


# ------------------------------------------------------------------------- PIN


def test_pin_flow(tcg_sim: Simulator, tmp_path: Path) -> None:
    key = write(tmp_path / "key", secret_bytes())
    pin = write(tmp_path / "pin", b"1234\n")
    wrong = write(tmp_path / "wrong", b"4321\n")
    blob = tmp_path / "b.json"
    assert cli(["seal", "--pin-file", str(pin), "--input", str(key), "--output",
                str(blob)]).rc == 0
    r = cli(["unseal", "--pin-file", str(pin), "--input", str(blob)])
    assert (r.rc, r.out) == (0, key.read_bytes()), r.err
    # the trailing newline of a PIN file is not part of the PIN
    assert cli(["unseal", "--pin-file", str(write(tmp_path / "p2", b"1234")), "--input",
                str(blob)]).out == key.read_bytes()
    r = cli(["unseal", "--pin-file", str(wrong), "--input", str(blob)])
    assert_one_line_error(r, ExitCode.AUTH_FAILED, "wrong PIN")
    assert r.out == b""
    r = cli(["unseal", "--input", str(blob)])
    assert_one_line_error(r, 2, "protected by a PIN", "--pin-file")
    r = cli(["unseal", "--legacy", "--allow-downgrade", "--pin-file", str(pin), "--input",
             str(blob)])
    assert_one_line_error(r, 2, "encrypted path")
    r = cli(["seal", "--legacy", "--allow-downgrade", "--pin-file", str(pin), "--input",
             str(key), "--output", str(tmp_path / "l.json")])
    assert_one_line_error(r, 2, "PIN needs the encrypted path")
    r = cli(["seal", "--pin-file", str(write(tmp_path / "e", b"\n")), "--input", str(key),
             "--output", str(tmp_path / "e.json")])
    assert_one_line_error(r, 2, "PIN is empty")
    # still unseals with the right PIN after one wrong try
    assert cli(["unseal", "--pin-file", str(pin), "--input", str(blob)]).out == key.read_bytes()
    # reseal keeps the PIN
    assert cli(["reseal", "--pin-file", str(pin), "--input", str(blob), "--pcrs",
                "sha256:0,4"]).rc == 0
    assert_one_line_error(cli(["unseal", "--pin-file", str(wrong), "--input", str(blob)]),
                          ExitCode.AUTH_FAILED)
    assert cli(["unseal", "--pin-file", str(pin), "--input", str(blob)]).out == key.read_bytes()
