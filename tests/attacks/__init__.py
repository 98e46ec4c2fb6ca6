"""Attack code for the interposer suite (tests/test_attack_*.py); nothing here is shipped.

* :mod:`attacks.bus` — a :class:`~tpmseal.sniff.capture.proxy.Proxy` in front of a
  simulator, snapshots of what must not change (TPM NV and persistent objects,
  files), leak assertions that never echo a secret, and the in-process CLI.
* :mod:`attacks.crypto` — the attacker's own KDFa, AES-CFB and RSA-OAEP salt
  arithmetic (written independently of :mod:`tpmseal.session`, so a working
  attack does not depend on tpmseal's code being right).
* :mod:`attacks.mitm` — the man in the middle: substitutes its key for the EK,
  unwraps and re-wraps salts, tracks session nonces and decrypts parameters.
"""
