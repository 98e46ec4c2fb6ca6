"""tpmseal.digests (cryptography-backed) agrees with hashlib and hmac."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from tpmseal import digests


@pytest.mark.parametrize("name", ["sha1", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize("key", [b"", b"k", b"K" * 200])
def test_digest_and_hmac_match_the_standard_library(name: str, key: bytes) -> None:
    data = b"tpmseal" * 13
    assert digests.digest(name, data) == hashlib.new(name, data).digest()
    assert digests.hmac_digest(key, data, name) == hmac.new(key, data, name).digest()


def test_equal_and_unknown_hash() -> None:
    assert digests.equal(b"abc", b"abc")
    assert not digests.equal(b"abc", b"abd") and not digests.equal(b"abc", b"ab")
    with pytest.raises(ValueError, match="unsupported hash"):
        digests.digest("md5", b"")
