"""A model of SPI TPM chips, as a response hook for tpmseal.sniff's Proxy.

:class:`ChipModel` delays each response by what the command would cost on a
real chip (table :data:`CHIPS`), optionally plus the context swaps Linux's
``/dev/tpmrm0`` resource manager performs around every command
(drivers/char/tpm/tpm2-space.c: ``tpm2_load_space`` ContextLoads every object
and session of the connection's space before the command; ``tpm2_save_space``
ContextSaves each afterwards, FlushContexts each object it saved, and forgets a
handle whose ContextSave fails with TPM_RC_REFERENCE_H0: a session the command
ended (continueSession clear) or a handle it flushed still costs that failed
ContextSave). swtpm's own time is added on top (it is small next to a chip's).

Every figure comes from one public source, the only per-chip benchmark found
for all three chips: wolfTPM's README, "TPM2 Benchmarks" (github.com/wolfSSL/
wolfTPM, README.md; examples/bench/bench.c), measured on SPI at 43 MHz with
wolfTPM's own stack, so each figure is a whole command round trip. Where no
published figure exists for a command, the table says so and the model charges
the base round trip: the RNG line's TPM2_GetRandom of 32 bytes (wolfTPM's
MAX_RNG_REQ_SIZE), the cheapest command measured. That is a lower bound for
commands that write NV (NV_DefineSpace, NV_Write), whose flash cost is unpublished.

An ECC-salted StartAuthSession costs the TPM one P-256 multiplication of the
caller's ephemeral point by the salt key's private scalar, plus KDFe (Part 1
Annex C.6.1). wolfTPM publishes no TPM2_ECDH_ZGen figure; it publishes
"ECDSA 256 sign" (one TPM2_Sign: one P-256 multiplication, of the generator)
and "ECDHE 256 agree" (one TPM2_ECDH_KeyGen: that multiplication of the
generator and then one of the key's point, so an upper bound for a salt). The
model charges the smaller of the two: the one-multiplication figure, a
like-sized command rather than a bound (the salt multiplies another point);
on a chip where signing costs more than the upper bound (the NPCT75x), the
upper bound. The only public ECDH_ZGen measurements of hardware TPMs found,
TPMScan's (github.com/crocs-muni/tpmscan-dataset, CHES 2024; 1000 runs
each, averages in ms, on hosts with slower round trips than wolfTPM's), put one
ZGen next to an ECDSA Sign of the same chip at 0.69x on an NPCT75x (FW 7.2.3.1:
ZGen 89.09, Sign 129.76, ECDH_KeyGen 102.18, RSA-2048 OAEP decrypt 153.12,
GetRandom 38.70) and at 1.14x on an ST33TPHF2XSPI (FW 1.769.0.0: ZGen 230.43,
Sign 201.39, ECDH_KeyGen 347.40, GetRandom 77.66); it has no ZGen on Infineon
chips. bench_chip.py prints, for each row that ECC-salts, its time with the
upper bound as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tpmseal.sniff.capture.hooks import HookContext
from tpmseal.wire.constants import TPM_ALG, TPM_CC, TPM_RH, TPMA_SESSION

WOLFTPM = "wolfTPM README.md, TPM2 Benchmarks"
TPMSCAN = ("TPMScan dataset (github.com/crocs-muni/tpmscan-dataset), ECDH_ZGen / Sign: "
           "0.69x on an NPCT75x 7.2.3.1, 1.14x on an ST33TPHF2XSPI 1.769.0.0")


@dataclass(frozen=True)
class Chip:
    name: str
    #: ms per command, and where each figure comes from
    base: float
    rsa_oaep_decrypt: float
    ecdsa_sign: float
    ecdhe_agree: float
    #: what an ECC-salted StartAuthSession is charged: min(ecdsa_sign, ecdhe_agree)
    ecc_salt: float
    rsa_keygen: float
    ecc_keygen: float
    sources: dict[str, str]


def _chip(name: str, rng_kb: int, rng_s: float, oaep: float, sign: float, agree: float,
          rsa_kg: float, ecc_kg: float) -> Chip:
    commands = rng_kb * 1024 // 32
    run = f"{WOLFTPM}, 'Run on {name} at 43MHz'"
    salt = ("the ECDSA sign figure, one P-256 multiplication like the salt's (of the "
            f"generator, not the caller's point: not a bound; {TPMSCAN})" if sign <= agree else
            "the ECDHE upper bound, below this chip's ECDSA sign figure")
    return Chip(name, rng_s * 1000 / commands, oaep, sign, agree, min(sign, agree), rsa_kg,
                ecc_kg, {
        "base": f"{run}: RNG {rng_kb} KB in {rng_s} s = {commands} GetRandom(32) commands",
        "rsa_oaep_decrypt": f"{run}: 'RSA 2048 Priv OAEP' avg {oaep} ms",
        "ecdsa_sign": f"{run}: 'ECDSA 256 sign' (TPM2_Sign, one P-256 multiplication) "
                      f"avg {sign} ms",
        "ecdhe_agree": f"{run}: 'ECDHE 256 agree' (TPM2_ECDH_KeyGen, two P-256 "
                       f"multiplications) avg {agree} ms; an upper bound for a salt's one "
                       "(no ZGen figure published)",
        "ecc_salt": f"charged for an ECC-salted StartAuthSession: {salt}",
        "rsa_keygen": f"{run}: 'RSA 2048 key gen' avg {rsa_kg} ms",
        "ecc_keygen": f"{run}: 'ECC 256 key gen' avg {ecc_kg} ms",
    })


CHIPS: dict[str, Chip] = {c.name.split()[-1]: c for c in (
    _chip("Infineon OPTIGA SLB9672", 24, 1.070, 87.738, 35.621, 65.948, 1567.678, 135.956),
    _chip("Infineon OPTIGA SLB9670", 16, 1.140, 167.399, 68.865, 232.144, 2196.230, 231.350),
    _chip("Nuvoton NPCT750", 16, 1.114, 70.716, 56.399, 29.402, 3408.678, 84.020),
)}
CHIPS["NPCT75x"] = CHIPS.pop("NPCT750")

UNPUBLISHED = ("no published figure for this command on this chip: the base round trip "
               "(GetRandom of 32 bytes)")

_CREATES_OBJECT = {TPM_CC.Load, TPM_CC.CreatePrimary, TPM_CC.LoadExternal, TPM_CC.ContextLoad,
                   TPM_CC.CreateLoaded, TPM_CC.StartAuthSession}


def _is_session(handle: int) -> bool:
    return handle >> 24 in (0x02, 0x03)


def _is_loadable(handle: int) -> bool:
    return handle >> 24 == 0x80 or _is_session(handle)


@dataclass
class ChipModel:
    """The response hook. *salt_keys* maps a persistent key handle to "rsa" or "ecc"."""

    chip: Chip
    resource_manager: bool
    salt_keys: dict[int, str]
    loaded: set[int] = field(default_factory=set)
    modelled_ms: float = 0.0
    swaps: int = 0  # ContextSave/ContextLoad/FlushContext the resource manager added
    ecc_salts: int = 0  # ECC-salted StartAuthSessions, each charged chip.ecc_salt

    def reset(self) -> None:
        self.loaded.clear()
        self.modelled_ms = 0.0
        self.swaps = 0
        self.ecc_salts = 0

    def salt(self, code: int, ctx: HookContext) -> str | None:
        """"rsa" or "ecc" for a salted StartAuthSession (by its tpmKey), else None."""
        dec = ctx.decoded
        if code != TPM_CC.StartAuthSession or dec is None or not dec.handles:
            return None
        tpm_key = dec.handles[0][1]
        if tpm_key == TPM_RH.NULL:
            return None
        return "ecc" if self.salt_keys.get(tpm_key) == "ecc" else "rsa"

    def cost(self, code: int, ctx: HookContext, salt: str | None) -> float:
        """Milliseconds the chip spends on one command (see the table's sources);
        *salt* is :meth:`salt` of the command."""
        c = self.chip
        if salt is not None:
            return c.ecc_salt if salt == "ecc" else c.rsa_oaep_decrypt
        dec = ctx.decoded
        if code == TPM_CC.CreatePrimary and dec is not None:
            public = next((p.value for p in dec.params if p.name == "in_public"), None)
            kind = getattr(public, "type", None)
            if kind == TPM_ALG.RSA:
                return c.rsa_keygen
            if kind == TPM_ALG.ECC:
                return c.ecc_keygen
        return c.base

    def __call__(self, ctx: HookContext) -> None:
        """``on_response``: delay by the modelled cost, then pass the response on."""
        code = ctx.code
        salt = self.salt(code, ctx)
        ms = self.cost(code, ctx, salt)
        if salt == "ecc":
            self.ecc_salts += 1
        swaps = 0
        if self.resource_manager:
            swaps += len(self.loaded)  # ContextLoad of the space before the command
        gone = self._track(code, ctx)
        if self.resource_manager:
            # tpm2_save_space: ContextSave of each handle of the space, including those
            # the command ended (it fails with TPM_RC_REFERENCE_H0 and the kernel
            # forgets them), then FlushContext of each object it saved
            objects = sum(1 for h in self.loaded if not _is_session(h))
            swaps += len(self.loaded) + len(gone) + objects
        ms += swaps * self.chip.base
        self.swaps += swaps
        self.modelled_ms += ms
        ctx.delay(ms / 1000)

    def _track(self, code: int, ctx: HookContext) -> set[int]:
        """Follow which objects and sessions are loaded, from the command and response;
        return the handles the command ended (flushed, context-saved or not continued)."""
        rsp = ctx.response
        if rsp is None or len(rsp) < 10 or int.from_bytes(rsp[6:10], "big") != 0:
            return set()
        dec, out = ctx.decoded, ctx.decoded_response
        if code in _CREATES_OBJECT and out is not None:
            self.loaded.update(h for _, h in out.handles if _is_loadable(h))
        if dec is None:
            return set()
        gone: set[int] = set()
        if code == TPM_CC.FlushContext and dec.params:
            gone.add(int(dec.params[0].value))
        if code == TPM_CC.ContextSave and dec.handles and _is_session(dec.handles[0][1]):
            gone.add(dec.handles[0][1])
        gone.update(s.session_handle for s in dec.sessions if _is_session(s.session_handle)
                    and not s.attributes & TPMA_SESSION.continueSession)
        gone &= self.loaded
        self.loaded -= gone
        return gone


def table_lines() -> list[str]:
    """The cost table with its sources, for the bench's output and the README."""
    out = ["chip model (ms per command; each figure with its source):"]
    for key, c in CHIPS.items():
        out.append(f"  {key} ({c.name}):")
        for what in ("base", "rsa_oaep_decrypt", "ecdsa_sign", "ecdhe_agree", "ecc_salt",
                     "rsa_keygen", "ecc_keygen"):
            out.append(f"    {what:<17} {getattr(c, what):8.2f}  {c.sources[what]}")
        out.append(f"    {'other commands':<17} {c.base:8.2f}  {UNPUBLISHED}")
    out.append("  /dev/tpmrm0: per command, ContextLoad of each loaded object and session "
               "before, ContextSave of each after (one that the command ended or flushed "
               "too: it fails with TPM_RC_REFERENCE_H0) and FlushContext of each object "
               "saved (Linux drivers/char/tpm/tpm2-space.c, tpm2_load_space and "
               "tpm2_save_space); each at the base cost (no published figure)")
    return out
