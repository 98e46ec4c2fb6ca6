"""Bad input as a clumsy user or a hostile environment gives it: every failure typed.

Endless files (/dev/zero), deep or odd JSON, salt keys no session can be
salted to, handles wider than 32 bits, an interposer's unknown nameAlg,
nonsense environment variables, a corrupted NV public index: each ends in one
line with the documented exit code (7 for files, 6 for the bus, 2 for usage).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from test_seal_support import assert_one_line_error, cli, cli_subprocess, pinned_json, write
from tpmseal.errors import BadInputError, ExitCode
from tpmseal.recipes.blob import SealedBlob
from tpmseal.recipes.templates import EK_ECC_TEMPLATE
from tpmseal.records import replace
from tpmseal.safejson import loads
from tpmseal.sniff.capture.hooks import HookContext
from tpmseal.sniff.capture.proxy import Proxy
from tpmseal.transport.simulator import Simulator
from tpmseal.wire.structures import EccPoint, Public, RsaParms

Doc = dict[str, Any]


@pytest.fixture
def sealed(tcg_sim: Simulator, tmp_path: Path) -> Iterator[Path]:
    blob = tmp_path / "blob.json"
    r = cli(["seal", "--input", str(write(tmp_path / "k", os.urandom(32))), "--output",
             str(blob)])
    assert r.rc == 0, r.err
    yield blob


def _edit(blob: Path, tmp_path: Path, change: Callable[[Doc], None]) -> Path:
    doc = json.loads(blob.read_text())
    change(doc)
    return write(tmp_path / "edited.json", json.dumps(doc).encode())


# ------------------------------------------------------------------ endless inputs


def test_endless_inputs_fail_fast(tcg_sim: Simulator, tmp_path: Path) -> None:
    cases = [
        (["--trust-file", "/dev/zero", "seal", "--input", "/dev/zero", "--output",
          str(tmp_path / "b.json")], ExitCode.BAD_INPUT, "trust file /dev/zero is larger"),
        (["seal", "--input", "/dev/zero", "--output", str(tmp_path / "b.json")],
         ExitCode.USAGE, "secret in /dev/zero is larger than 4096"),
        (["unseal", "--input", "/dev/zero"], ExitCode.USAGE, "not a regular file"),
        (["seal", "--input", str(write(tmp_path / "k", os.urandom(32))), "--pin-file",
          "/dev/zero", "--output", str(tmp_path / "b.json")], ExitCode.USAGE,
         "PIN in /dev/zero is larger"),
        (["decode", "--secret", "@/dev/zero", str(write(tmp_path / "c.jsonl", b"\n"))],
         ExitCode.USAGE, "secret in /dev/zero is larger"),
        (["decode", "/dev/zero"], ExitCode.USAGE, "capture in /dev/zero is larger"),
    ]
    for argv, code, needle in cases:
        start = time.monotonic()
        assert_one_line_error(cli(argv), code, needle)
        assert time.monotonic() - start < 10, argv


def test_oversize_secret_and_pin_are_usage_errors(tcg_sim: Simulator, tmp_path: Path) -> None:
    """One exit code per mistake, whatever the size: 129 bytes and 1 MB are both 2."""
    out = str(tmp_path / "b.json")
    for size in (129, 1 << 20):
        r = cli(["seal", "--input", str(write(tmp_path / "s", b"k" * size)), "--output", out])
        assert_one_line_error(r, ExitCode.USAGE)
    for size in (33, 2 << 20):
        r = cli(["seal", "--input", str(write(tmp_path / "k", os.urandom(32))), "--pin-file",
                 str(write(tmp_path / "p", b"9" * size)), "--output", out])
        assert_one_line_error(r, ExitCode.USAGE, "PIN")


# ---------------------------------------------------------------------- JSON guard


@pytest.mark.parametrize("text,needle", [
    ("[" * 100000 + "]" * 100000, "nested deeper"),
    ('{"a":' * 20 + "1" + "}" * 20, "nested deeper"),
    ('{"format": 1e400}', "out of range"),
    ('{"format": NaN}', "non-finite"),
    ('{"format": -Infinity}', "non-finite"),
    ('{"format": ' + "9" * 5000 + "}", "digits"),
], ids=["deep-100k", "deep-20", "1e400", "nan", "inf", "huge-int"])
def test_safejson_rejects(text: str, needle: str) -> None:
    with pytest.raises(BadInputError, match=needle):
        loads(text, "x", "do this")


def test_deep_and_odd_json_in_every_file(tcg_sim: Simulator, tmp_path: Path) -> None:
    deep = "[" * 50000 + "]" * 50000
    for content in (deep, '{"format": 1e400}', b"\xff\xfe{}"):
        f = write(tmp_path / "f.json", content.encode() if isinstance(content, str) else content)
        assert_one_line_error(cli(["unseal", "--input", str(f)]), ExitCode.BAD_INPUT)
        assert_one_line_error(cli(["--trust-file", str(f), "unseal", "--input", str(f)]),
                              ExitCode.BAD_INPUT, "trust file")
        cap = write(tmp_path / "c.jsonl", (content if isinstance(content, str)
                                           else content.decode("latin-1")).encode())
        r = cli(["decode", "--format", "jsonl", str(cap)])
        assert_one_line_error(r, ExitCode.BAD_INPUT)


ODD_POLICIES = {
    "deep": "[" * 20000 + "]" * 20000,
    "deep-entries": '{"sha256":' + "[" * 20000 + "]" * 20000 + "}",
    "1e400": '{"sha256":[{"pcrs":[1e400],"pol":"00","pkfp":"00","sig":""}]}',
    "float-pcr": '{"sha256":[{"pcrs":[11.9],"pol":"00","pkfp":"00","sig":""}]}',
    "string-pcrs": '{"sha256":[{"pcrs":"11","pol":"00","pkfp":"00","sig":""}]}',
    "bool-pcr": '{"sha256":[{"pcrs":[true],"pol":"00","pkfp":"00","sig":""}]}',
}


def test_deep_and_odd_json_in_policy_values_and_clevis_input(tcg_sim: Simulator,
                                                             tmp_path: Path) -> None:
    """Signed policy files (systemd-measure's too), PCR values files, a clevis token's
    protected header and the JWK it unseals are untrusted JSON as well: typed errors only
    (before: RecursionError or OverflowError, an internal error that also stopped
    `luks test` from trying the volume's other tokens)."""
    from tpmseal.errors import IntegrityError
    from tpmseal.recipes import clevis, signed

    for case, content in ODD_POLICIES.items():
        f = write(tmp_path / f"{case}.json", content.encode())
        with pytest.raises(BadInputError):
            signed.load_policies([str(f)])
    f = write(tmp_path / "values.json", ODD_POLICIES["deep"].encode())
    key = write(tmp_path / "key", b"k" * 32)
    assert_one_line_error(cli(["seal", "--input", str(key), "--pcr-values", str(f),
                               "--output", str(tmp_path / "blob.json")]),
                          ExitCode.BAD_INPUT, "PCR values")
    deep = base64.urlsafe_b64encode(ODD_POLICIES["deep"].encode()).decode().rstrip("=")
    with pytest.raises(BadInputError, match="clevis token 3"):
        clevis.ClevisBinding.parse({"jwe": {"protected": deep}}, 3)
    with pytest.raises(IntegrityError, match="not an A256GCM key"):
        clevis.jwk_key(ODD_POLICIES["deep"].encode())


# ----------------------------------------------------------------------- salt keys


def _salt_public(doc: Doc) -> Public:
    return Public.from_sized(base64.b64decode(doc["salt_key"]["public"]))


def _set_salt(doc: Doc, pub: Public | bytes) -> None:
    raw = pub.sized() if isinstance(pub, Public) else pub
    doc["salt_key"]["public"] = base64.b64encode(raw).decode()
    if isinstance(pub, Public):
        doc["salt_key"]["name"] = pub.name().hex()


def _tiny_modulus(doc: Doc) -> None:
    p = _salt_public(doc)
    assert isinstance(p.parameters, RsaParms)
    _set_salt(doc, replace(p, parameters=replace(p.parameters, key_bits=512),
                           unique=(int.from_bytes(os.urandom(64), "big") | 1).to_bytes(64, "big")))


def _even_exponent(doc: Doc) -> None:
    p = _salt_public(doc)
    assert isinstance(p.parameters, RsaParms)
    _set_salt(doc, replace(p, parameters=replace(p.parameters, exponent=65536)))


def _off_curve(doc: Doc) -> None:
    _set_salt(doc, EK_ECC_TEMPLATE.with_unique(EccPoint((1).to_bytes(32, "big"),
                                                        (1).to_bytes(32, "big"))))


def _unknown_name_alg(doc: Doc) -> None:
    raw = bytearray(_salt_public(doc).sized())
    raw[4:6] = (0x0072).to_bytes(2, "big")  # size(2) type(2) nameAlg(2)
    _set_salt(doc, bytes(raw))


SALT_CASES = {"tiny-modulus": (_tiny_modulus, "too small"),
              "even-exponent": (_even_exponent, "exponent 65536"),
              "off-curve": (_off_curve, "not on the curve"),
              "unknown-nameAlg": (_unknown_name_alg, "0x72")}


@pytest.mark.parametrize("case", sorted(SALT_CASES))
def test_bad_salt_key_in_blob(sealed: Path, tmp_path: Path, case: str) -> None:
    change, needle = SALT_CASES[case]
    bad = _edit(sealed, tmp_path, change)
    assert_one_line_error(cli(["unseal", "--input", str(bad)]), ExitCode.BAD_INPUT, needle)


@pytest.mark.parametrize("case", sorted(SALT_CASES))
def test_bad_salt_key_in_trust_file(sealed: Path, tcg_sim: Simulator, tmp_path: Path,
                                    case: str) -> None:
    change, needle = SALT_CASES[case]
    trust = json.loads((tcg_sim.state / "trust.json").read_text())
    ek = pinned_json(trust, "tcg")["ek"]
    holder = {"salt_key": ek}
    change(holder)
    bad = write(tmp_path / "trust.json", json.dumps(trust).encode())
    r = cli(["--trust-file", str(bad), "unseal", "--input", str(sealed)])
    assert_one_line_error(r, ExitCode.BAD_INPUT, "trust file", needle)


@pytest.mark.parametrize("field", ["parent", "salt_key"])
def test_handle_wider_than_32_bits(sealed: Path, tmp_path: Path, field: str) -> None:
    bad = _edit(sealed, tmp_path, lambda d: d[field].update(handle="0x181000001"))
    assert_one_line_error(cli(["unseal", "--input", str(bad)]), ExitCode.BAD_INPUT,
                          "not a 32-bit handle")


def test_blob_round_trip_still_parses(sealed: Path) -> None:
    assert SealedBlob.from_json(sealed.read_bytes()).salt_key is not None


# ------------------------------------------------------------- the bus: nameAlg


def _proxy(sim: Simulator, tmp_path: Path) -> Proxy:
    return Proxy(f"unix:{tmp_path / 'p.sock'}", sim.uri)


def _name_alg_hook(command: str, offset: int) -> Callable[[HookContext], bytes | None]:
    def hook(ctx: HookContext) -> bytes | None:
        if ctx.name != command or ctx.response is None or ctx.response[6:10] != bytes(4):
            return None
        data = bytearray(ctx.response)
        data[offset:offset + 2] = (0x0072).to_bytes(2, "big")
        return bytes(data)
    return hook


def test_interposer_name_alg_in_read_public(tcg_sim: Simulator, tmp_path: Path) -> None:
    # header(10) TPM2B_PUBLIC.size(2) type(2) nameAlg(2)
    with _proxy(tcg_sim, tmp_path) as p, p.interpose(
            on_response=_name_alg_hook("ReadPublic", 14)):
        r = cli(["--tpm", p.uri, "--trust-file", str(tmp_path / "t.json"), "provision"])
    assert_one_line_error(r, ExitCode.INTEGRITY, "ReadPublic", "malformed")


def test_interposer_name_alg_in_nv_read_public(eve_sim: Simulator, tmp_path: Path) -> None:
    assert cli(["seal", "--profile", "eve", "--nv", "--input",
                str(write(tmp_path / "k", os.urandom(32)))]).rc == 0
    trust = eve_sim.state / "trust.json"  # without the pair's public areas (as from
    doc = json.loads(trust.read_text())  # before nv_public), unseal asks NV_ReadPublic
    del pinned_json(doc, "eve")["nv_public"]
    trust.write_text(json.dumps(doc))
    # header(10) TPM2B_NV_PUBLIC.size(2) nvIndex(4) nameAlg(2)
    with _proxy(eve_sim, tmp_path) as p, p.interpose(
            on_response=_name_alg_hook("NV_ReadPublic", 16)):
        r = cli(["--tpm", p.uri, "unseal", "--profile", "eve", "--nv", "--output", "-"])
    assert_one_line_error(r, ExitCode.INTEGRITY, "NV_ReadPublic", "malformed")
    assert r.out == b""


# --------------------------------------------------------------------- environment


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", "0", "-1", "soon"])
def test_bad_timeout_is_a_usage_error(tcg_sim: Simulator, value: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TPMSEAL_TIMEOUT", value)
    assert_one_line_error(cli(["probe"]), ExitCode.USAGE, "TPMSEAL_TIMEOUT")


@pytest.mark.parametrize("uri", ["tcp:localhost:²", "tcp:localhost:٣٣", "tcp:h:99999999999",
                                 "tcp::1", "bogus:x"])
def test_bad_tpm_uri_is_a_usage_error(uri: str) -> None:
    assert_one_line_error(cli(["--tpm", uri, "probe"]), ExitCode.USAGE, "URI")


def test_bad_environment_in_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "TPMSEAL_TIMEOUT": "nan", "TPMSEAL_TPM": "tcp:h:1"}
    assert_one_line_error(cli_subprocess(["probe"], env=env), ExitCode.USAGE, "TPMSEAL_TIMEOUT")


# ------------------------------------------------------------------ corrupted NV


def test_vault_key_with_corrupted_nv_public_index(eve_sim: Simulator, tmp_path: Path) -> None:
    assert cli(["vault-key", "--output", str(tmp_path / "k1")]).rc == 0
    from tpmseal.client.tpm import Tpm
    from tpmseal.recipes.stores import nv_define_write, nv_undefine

    with Tpm.open(eve_sim.uri) as t:
        nv_undefine(t, 0x01900000)
        nv_define_write(t, 0x01900000, b"\x00\x23garbage, not a TPMT_PUBLIC")
    r = cli(["vault-key", "--output", str(tmp_path / "k2")])
    assert_one_line_error(r, ExitCode.INTEGRITY, "could not be read")
    assert not (tmp_path / "k2").exists()


def test_huge_blob_file_is_refused_without_reading_it(tcg_sim: Simulator, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(100 << 20)  # sparse: 100 MB that cost nothing to make
    r = cli_subprocess(["unseal", "--input", str(big)])
    assert_one_line_error(r, ExitCode.BAD_INPUT, "larger than 65536 bytes")
