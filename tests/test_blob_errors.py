"""Bad blob files give one-line errors with exit code 7 (BAD_INPUT) and no traceback."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import measure_boot
from test_seal_support import (
    assert_one_line_error,
    cli,
    cli_subprocess,
    pinned_json,
    secret_bytes,
    write,
)
from tpmseal.client.tpm import Tpm
from tpmseal.errors import BadInputError
from tpmseal.recipes.blob import SealedBlob
from tpmseal.recipes.profiles import get_profile
from tpmseal.recipes.provision import provision
from tpmseal.transport.simulator import Simulator

Doc = dict[str, Any]


@pytest.fixture
def sealed(tcg_sim: Simulator, tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    key = secret_bytes()
    blob = tmp_path / "good.json"
    assert cli(["seal", "--input", str(write(tmp_path / "key", key)), "--output",
                str(blob)]).rc == 0
    yield blob, key


def _b64_flip(doc: Doc, field: str, offset: int) -> None:
    raw = bytearray(base64.b64decode(doc[field]))
    raw[offset] ^= 0x01
    doc[field] = base64.b64encode(bytes(raw)).decode()


def _set(path: list[str], value: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


def _delete(key: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        del doc[key]
    return edit


EDITS: dict[str, tuple[Callable[[Doc], None], str]] = {
    "wrong-format-version": (_set(["format"], "tpmseal-sealed/9"), "has format"),
    "no-format": (_delete("format"), "has no format field"),
    "missing-private": (_delete("private"), "missing field 'private'"),
    "missing-pcrs": (_delete("pcrs"), "missing field 'pcrs'"),
    "missing-parent": (_delete("parent"), "missing field 'parent'"),
    "wrong-base64": (_set(["public"], "AE4A!!!not base64"), "'public' is not valid base64"),
    "base64-of-garbage": (_set(["private"], base64.b64encode(b"\x00\x10abc").decode()),
                          "malformed"),
    "public-truncated": (lambda d: d.__setitem__(
        "public", base64.b64encode(base64.b64decode(d["public"])[:-4]).decode()), "malformed"),
    "tampered-policy-digest": (_set(["policy_digest"], "00" * 32),
                               "policy_digest does not match"),
    "policy-digest-not-hex": (_set(["policy_digest"], "xyz"), "malformed"),
    "unknown-sealed-with": (_set(["sealed_with"], "rot13"), "unknown sealed_with"),
    "bad-pcr-bank": (_set(["pcrs"], {"md5": [0]}), "malformed"),
    "pcr-out-of-range": (_set(["pcrs"], {"sha256": [0, 99]}), "malformed"),
    "pcrs-not-a-dict": (_set(["pcrs"], [0, 1]), "malformed"),
    "pcr-value-not-hex": (_set(["pcr_values", "sha256", "0"], "zz"), "malformed"),
    "parent-handle-not-hex": (_set(["parent", "handle"], "srk"), "malformed"),
    "salt-name-mismatch": (_set(["salt_key", "name"], "000b" + "11" * 32),
                           "salt_key name does not match"),
    "salt-public-garbage": (_set(["salt_key", "public"], "AAAA"), "malformed"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_malformed_field(sealed: tuple[Path, bytes], tmp_path: Path, case: str) -> None:
    good, _ = sealed
    edit, needle = EDITS[case]
    doc = json.loads(good.read_text())
    edit(doc)
    bad = write(tmp_path / "bad.json", json.dumps(doc).encode())
    r = cli(["unseal", "--input", str(bad)])
    assert_one_line_error(r, 7, str(bad), needle)
    assert r.out == b""
    with pytest.raises(BadInputError):
        SealedBlob.from_json(bad.read_bytes())


PCR_VALUE_EDITS: dict[str, tuple[Callable[[Doc], None], str]] = {
    "value-missing": (lambda d: d["pcr_values"]["sha256"].pop("0"), "do not list exactly"),
    "value-extra": (_set(["pcr_values", "sha256", "9"], "00" * 32), "do not list exactly"),
    "only-one-value": (_set(["pcr_values"], {"sha256": {"0": "00" * 32}}), "do not list exactly"),
    "value-edited": (_set(["pcr_values", "sha256", "0"], "11" * 32), "do not give its policy"),
    "value-short": (_set(["pcr_values", "sha256", "4"], "00"), "do not give its policy"),
}


@pytest.mark.parametrize("case", list(PCR_VALUE_EDITS))
def test_inconsistent_pcr_values(sealed: tuple[Path, bytes], tmp_path: Path, case: str) -> None:
    """Seal-time values that cannot be what the object was sealed to: a bad file (7),
    not a crash and not a report blaming the TPM's PCRs."""
    good, _ = sealed
    edit, needle = PCR_VALUE_EDITS[case]
    doc = json.loads(good.read_text())
    edit(doc)
    bad = write(tmp_path / "bad.json", json.dumps(doc).encode())
    assert_one_line_error(cli(["unseal", "--input", str(bad)]), 7, needle)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'"tpmseal"', b"\xff\xfe\x00",
                                     b"null"], ids=["empty", "truncated", "array", "string",
                                                    "not-utf8", "null"])
def test_not_a_blob(sealed: tuple[Path, bytes], tmp_path: Path, content: bytes) -> None:
    bad = write(tmp_path / "bad.json", content)
    assert_one_line_error(cli(["unseal", "--input", str(bad)]), 7, "is not a tpmseal blob")


def test_truncated_json_every_length(sealed: tuple[Path, bytes], tmp_path: Path) -> None:
    """No prefix of a valid blob is accepted or crashes (checked without the TPM)."""
    text = sealed[0].read_bytes()
    for n in range(0, len(text) - 2, 7):
        with pytest.raises(BadInputError):
            SealedBlob.from_json(text[:n])
    bad = write(tmp_path / "bad.json", text[: len(text) // 2])
    assert_one_line_error(cli(["unseal", "--input", str(bad)]), 7, "not JSON")


def test_tampered_public_area_refused_by_tpm(sealed: tuple[Path, bytes], tmp_path: Path) -> None:
    """A consistent-looking blob whose public area was altered: the TPM's integrity check
    on Load rejects it."""
    good, _ = sealed
    doc = json.loads(good.read_text())
    # set noDA (0x400) in objectAttributes: size(2) type(2) nameAlg(2) attributes(4)
    pub = bytearray(base64.b64decode(doc["public"]))
    assert pub[6:10] == bytes.fromhex("00000092")
    pub[8] |= 0x04
    doc["public"] = base64.b64encode(bytes(pub)).decode()
    bad = write(tmp_path / "bad.json", json.dumps(doc).encode())
    assert_one_line_error(cli(["unseal", "--input", str(bad)]), 7,
                          "the TPM refused to load the sealed object")
    # and the private part
    doc = json.loads(good.read_text())
    _b64_flip(doc, "private", 40)
    bad = write(tmp_path / "bad2.json", json.dumps(doc).encode())
    assert_one_line_error(cli(["unseal", "--input", str(bad)]), 7,
                          "the TPM refused to load the sealed object")


@pytest.fixture
def other_tpm(tmp_path: Path) -> Iterator[Simulator]:
    """A different TPM (its own seeds, EK and SRK), provisioned for tcg."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="tpmseal-other-", dir="/tmp"))
    s = Simulator(d)
    s.start()
    with Tpm.open(s.uri) as t:
        provision(t, get_profile("tcg"), ek_type="rsa", trust_file=d / "trust.json")
    measure_boot(s)
    yield s
    s.stop()
    shutil.rmtree(d, ignore_errors=True)


def test_blob_from_another_tpm(tcg_sim: Simulator, other_tpm: Simulator, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    key = write(tmp_path / "key", secret_bytes())
    blob = tmp_path / "b.json"
    other = ["--tpm", other_tpm.uri, "--trust-file", str(other_tpm.state / "trust.json")]
    assert cli([*other, "seal", "--input", str(key), "--output", str(blob)]).rc == 0
    assert cli([*other, "unseal", "--input", str(blob)]).out == key.read_bytes()
    # on this TPM with its own trust file: the blob's EK is not the pinned one, which is
    # a fact of the files (not of the bus): another TPM's blob, not an interposer
    r = cli(["unseal", "--input", str(blob)])
    assert_one_line_error(r, 7, "sealed on another TPM", "not the pinned endorsement key")
    # only the EK differs (the SRK is this TPM's): still the files disagreeing
    doc = json.loads(blob.read_text())
    doc["parent"]["name"] = pinned_json(json.loads(
        (tcg_sim.state / "trust.json").read_text()))["srk"]["name"]
    edited = write(tmp_path / "edited.json", json.dumps(doc).encode())
    r = cli(["unseal", "--input", str(edited)])
    assert_one_line_error(r, 7, "sealed on another TPM", "not the pinned endorsement key")
    # without a trust file, this TPM cannot use the blob's own salt key
    monkeypatch.setenv("TPMSEAL_TRUST_FILE", str(tmp_path / "none.json"))
    r = cli(["unseal", "--input", str(blob)])
    assert_one_line_error(r, 7, "sealed on another TPM", "could not decrypt the session salt")
    assert r.out == b""


def test_bad_inputs_subprocess(sealed: tuple[Path, bytes], tmp_path: Path) -> None:
    """The same failures through a real process: one line, no traceback, right code."""
    good, _ = sealed
    doc = json.loads(good.read_text())
    doc["format"] = "tpmseal-sealed/9"
    bad = write(tmp_path / "bad.json", json.dumps(doc).encode())
    r = cli_subprocess(["unseal", "--input", str(bad)])
    assert_one_line_error(r, 7, "has format 'tpmseal-sealed/9'")
    r = cli_subprocess(["unseal", "--input", str(tmp_path / "missing.json")])
    assert_one_line_error(r, 11, "no sealed secret in", "missing.json")
    r = cli_subprocess(["unseal", "--profile", "acme", "--input", str(good)])
    assert_one_line_error(r, 2, "invalid choice: 'acme'")
    assert r.err.startswith("tpmseal unseal: error: argument --profile")
    r = cli_subprocess(["seal", "--input", str(tmp_path / "nokey"), "--output",
                        str(tmp_path / "x.json")])
    assert_one_line_error(r, 2, "does not exist")
    r = cli_subprocess(["unseal", "--input", str(tmp_path)])
    assert_one_line_error(r, 2, "is not a regular file")
