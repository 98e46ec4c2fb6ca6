#!/bin/bash
# dracut module: tpmseal in the initramfs — the Python interpreter tpmseal runs on, exactly
# the module files the unlock path imports (boot-files), cryptsetup, the trust file, the TPM
# drivers, the wrapper /usr/lib/tpmseal/tpmseal, the keyscript, and (with dracut's systemd
# module) tpmseal-unlock@.service enabled for each /etc/tpmseal/volumes/NAME.conf.
#
# Settings (dracut.conf.d): TPMSEAL_PYTHON (default python3), TPMSEAL_LIB (default
# /usr/lib/tpmseal), TPMSEAL_TRUST_FILE (default /var/lib/tpmseal/trust.json),
# TPMSEAL_VOLUMES (default /etc/tpmseal/volumes).

check() {
    require_binaries cryptsetup || return 1
    return 255  # only when asked for: add_dracutmodules+=" tpmseal "
}

depends() {
    echo crypt
    return 0
}

installkernel() {
    instmods tpm_crb tpm_tis tpm_tis_spi
}

install() {
    local py="${TPMSEAL_PYTHON:-python3}" lib="${TPMSEAL_LIB:-/usr/lib/tpmseal}"
    local trust="${TPMSEAL_TRUST_FILE:-/var/lib/tpmseal/trust.json}"
    local volumes="${TPMSEAL_VOLUMES:-/etc/tpmseal/volumes}"
    local listing kind path python pythonpath conf name
    if ! listing="$("$py" "$lib/boot-files")"; then
        derror "tpmseal: $py cannot import tpmseal and cryptography"
        return 1
    fi
    while read -r kind path; do
        case "$kind" in
            python) inst_binary "$path" ;;
            file)
                case "$path" in
                    *.so) inst_library "$path" ;;
                    *) inst_simple "$path" ;;
                esac ;;
        esac
    done <<< "$listing"
    # bytecode compiled once, here, as unchecked hash-based .pyc (PEP 552): without it every
    # boot compiles each module from source again, about 4x the unlock's start-up. Isolated
    # (-I): `-m` would put the working directory first on sys.path (a compileall.py there
    # would run as root) and PYTHONPYCACHEPREFIX would put the bytecode outside the image
    sed -n 's/^file \(.*\.py\)$/\1/p' <<< "$listing" | while read -r path; do
        [[ -f $initdir$path ]] && echo "$initdir$path"
    done | "$py" -I -m compileall -q --invalidation-mode unchecked-hash -s "$initdir" -p / -i - \
        > /dev/null || dwarn "tpmseal: bytecode not compiled: each boot compiles it"
    python="$(sed -n 's/^python //p' <<< "$listing")"
    pythonpath="$(sed -n 's/^path //p' <<< "$listing" | paste -sd:)"
    mkdir -p "$initdir/usr/lib/tpmseal"
    cat > "$initdir/usr/lib/tpmseal/tpmseal" <<WRAPPER
#!/bin/sh
export PYTHONPATH="$pythonpath" TPMSEAL_TRUST_FILE="\${TPMSEAL_TRUST_FILE:-$trust}"
exec "$python" -S -c 'import sys; from tpmseal.cli.main import main; sys.exit(main())' "\$@"
WRAPPER
    chmod 0755 "$initdir/usr/lib/tpmseal/tpmseal"
    inst_binary cryptsetup
    inst_script "$lib/keyscript" /usr/lib/tpmseal/keyscript
    inst_script "$lib/tpmseal-unlock" /usr/lib/tpmseal/tpmseal-unlock
    if [[ -r $trust ]]; then
        inst_simple "$trust"
    else
        dwarn "tpmseal: no trust file $trust: run \`tpmseal provision\`"
    fi
    [[ -r /etc/tpmseal/keyscript.conf ]] && inst_simple /etc/tpmseal/keyscript.conf
    if dracut_module_included "systemd"; then
        inst_simple "$lib/tpmseal-unlock@.service" "$systemdsystemunitdir/tpmseal-unlock@.service"
        for conf in "$volumes"/*.conf; do
            [[ -r $conf ]] || continue
            name="$(basename "$conf" .conf)"
            inst_simple "$conf" "/etc/tpmseal/volumes/$name.conf"
            mkdir -p "$initdir$systemdsystemunitdir/cryptsetup.target.wants"
            ln -sf ../tpmseal-unlock@.service \
                "$initdir$systemdsystemunitdir/cryptsetup.target.wants/tpmseal-unlock@$name.service"
        done
    fi
}
