#!/usr/bin/env bash
# The peer we compare against and attack in tests: tpm2-tools 5.4 sealing a key under a
# PolicyPCR with bus protection -- an EK-salted HMAC session with AES-128-CFB for Create
# (inSensitive encrypted), an EK-salted policy session for Unseal (outData encrypted).
# Note the trust model: --tpmkey-context makes the tools read the EK's public area from
# the TPM (TPM2_ReadPublic) every time, over the same bus it is meant to protect.
#
# usage: tpm2_tools_flow.sh STEP...      STEP: provision | seal | unseal | cleanup
# env:   TPM2TOOLS_TCTI (required, e.g. swtpm:path=DIR/tpm.sock)
#        EK_HANDLE (0x81010001), SRK_HANDLE (0x81000001), PCRS (sha256:0,1,2,3,4,6,7)
#        WORKDIR (required: holds secret.bin, the policy, seal.pub/seal.priv, unsealed.bin)
# No resource manager sits between the tools and the TPM, so every step flushes what the
# tools leave loaded.
set -euo pipefail
: "${TPM2TOOLS_TCTI:?set TPM2TOOLS_TCTI}" "${WORKDIR:?set WORKDIR}"
export TPM2TOOLS_TCTI
ek=${EK_HANDLE:-0x81010001}
srk=${SRK_HANDLE:-0x81000001}
pcrs=${PCRS:-sha256:0,1,2,3,4,6,7}
cd "$WORKDIR"

step_provision() {
    tpm2_readpublic -c "$ek" >/dev/null 2>&1 || tpm2_createek -c "$ek" -G rsa -u ek.pub >/dev/null
    if ! tpm2_readpublic -c "$srk" >/dev/null 2>&1; then
        tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb -c srk.ctx \
            -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt' \
            >/dev/null
        tpm2_evictcontrol -C o -c srk.ctx "$srk" >/dev/null
        tpm2_flushcontext -t
    fi
    [ -s secret.bin ] || head -c 32 /dev/urandom >secret.bin
}

step_seal() {
    # the PCR policy from a trial session (5.4 leaves that session loaded: flush it)
    tpm2_createpolicy --policy-pcr -l "$pcrs" -L pcr.policy >/dev/null
    tpm2_flushcontext -l
    # -G aes is AES-128-CFB in 5.4; --tpmkey-context salts without binding
    tpm2_startauthsession --hmac-session --tpmkey-context "$ek" -g sha256 -G aes -S hmac.ctx
    tpm2_sessionconfig --enable-decrypt hmac.ctx
    tpm2_create -C "$srk" -P session:hmac.ctx -g sha256 -a 'fixedtpm|fixedparent|noda' \
        -L pcr.policy -i secret.bin -u seal.pub -r seal.priv >/dev/null
    tpm2_flushcontext hmac.ctx
}

step_unseal() {
    tpm2_load -C "$srk" -u seal.pub -r seal.priv -c seal.ctx >/dev/null
    tpm2_startauthsession --policy-session --tpmkey-context "$ek" -g sha256 -G aes -S pol.ctx
    tpm2_policypcr -S pol.ctx -l "$pcrs" >/dev/null
    tpm2_sessionconfig --enable-encrypt pol.ctx
    tpm2_unseal -c seal.ctx -p session:pol.ctx -o unsealed.bin
    tpm2_flushcontext pol.ctx
    tpm2_flushcontext -t
    cmp -s unsealed.bin secret.bin || { echo "unsealed data differs from secret.bin" >&2; exit 1; }
}

step_cleanup() {
    tpm2_flushcontext -t || true
    tpm2_flushcontext -s || true
    tpm2_flushcontext -l || true
}

[ $# -gt 0 ] || { echo "usage: $0 provision|seal|unseal|cleanup ..." >&2; exit 2; }
for step in "$@"; do
    case $step in
        provision|seal|unseal|cleanup) "step_$step" ;;
        *) echo "unknown step: $step" >&2; exit 2 ;;
    esac
done
