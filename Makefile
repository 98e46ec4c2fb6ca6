# Two entry points (see README): `make demo` and `make test`.
# Both install what they need on a fresh Debian/Ubuntu machine: swtpm, tpm2-tools, tshark,
# sigrok-cli, cryptsetup, clevis, systemd, initramfs-tools and dracut from apt, tpmseal into a
# virtual environment in .venv.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := swtpm swtpm-tools tpm2-tools tshark sigrok-cli python3-venv cryptsetup-bin clevis clevis-luks \
                clevis-tpm2 systemd initramfs-tools cryptsetup-initramfs dracut-core groff-base zsh
#: the lowest cryptography release tpmseal supports (pyproject.toml: cryptography>=45, for
#: x509.verification.ExtensionPolicy; 41 also lacked Certificate.not_valid_before_utc)
CRYPTOGRAPHY_FLOOR := 45.0.0
#: a representative subset for the floor: KDFs, salts, parameter encryption, HMACs, X.509
#: chains, sealing end to end, the library API
FLOOR_TESTS := tests/test_kdf.py tests/test_session_cfb_key.py tests/test_session_matrix.py \
	tests/test_attack_ekcert.py tests/test_attack_mitm.py tests/test_seal_roundtrip.py \
	tests/test_ekcert_chain.py tests/test_api.py tests/test_sniff_sessions.py

.PHONY: demo test lint deps bench bench-bus bench-eve bench-luks fuzz clean install-boot man completion \
	wheel-check test-floor

$(VENV)/.installed: pyproject.toml
	@command -v swtpm >/dev/null && command -v tpm2_unseal >/dev/null && command -v tshark >/dev/null \
	  && command -v sigrok-cli >/dev/null \
	  && command -v cryptsetup >/dev/null && command -v clevis >/dev/null \
	  && command -v mkinitramfs >/dev/null && command -v dracut >/dev/null \
	  && command -v groff >/dev/null && command -v zsh >/dev/null \
	  && test -x /lib/systemd/systemd-measure \
	  || { $(SUDO) apt-get update -qq && \
	       $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

deps: $(VENV)/.installed

demo: deps
	$(VENV)/bin/tpmseal demo

test: deps
	$(VENV)/bin/python -m pytest -q -n 2 tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc
	$(VENV)/bin/mypy
	$(VENV)/bin/ruff check src tests bench tools

# man pages and shell completion, generated from the argparse definitions
man: deps
	$(VENV)/bin/python tools/cli_docs.py man build/man

completion: deps
	$(VENV)/bin/python tools/cli_docs.py bash build/completion/tpmseal.bash
	$(VENV)/bin/python tools/cli_docs.py zsh build/completion/_tpmseal

# the wheel installs into a clean virtual environment (no C toolchain: pure Python) and
# runs the demo from there, away from the source tree
wheel-check: deps
	rm -rf dist build/wheel-venv
	$(VENV)/bin/pip wheel -q --no-deps -w dist .
	ls dist/tpmseal-*-py3-none-any.whl
	$(PYTHON) -m venv build/wheel-venv
	build/wheel-venv/bin/pip install -q dist/tpmseal-*-py3-none-any.whl
	cd / && $(CURDIR)/build/wheel-venv/bin/tpmseal --version
	cd / && $(CURDIR)/build/wheel-venv/bin/python -m tpmseal demo >/dev/null

# the suite's representative subset against the lowest supported cryptography
.venv-floor/.installed: pyproject.toml
	$(PYTHON) -m venv .venv-floor
	.venv-floor/bin/pip install -q -e '.[test]' 'cryptography==$(CRYPTOGRAPHY_FLOOR)'
	touch $@

test-floor: deps .venv-floor/.installed
	.venv-floor/bin/python -c 'import cryptography; assert cryptography.__version__ == "$(CRYPTOGRAPHY_FLOOR)"'
	.venv-floor/bin/python -m pytest -q -n 2 $(FLOOR_TESTS)

# BENCH_ARGS (e.g. --runs 30) go to bench_cli.py and bench_unseal.py, CHIP_ARGS (e.g.
# --runs 5 --chips SLB9672) to bench_chip.py, whose modelled chip times are deterministic.
bench: deps
	@/usr/bin/python3 -c 'import tpm2_pytss' 2>/dev/null \
	  || { $(SUDO) apt-get update -qq && \
	       $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-tpm2-pytss; } \
	  || echo "could not install python3-tpm2-pytss: benchmarking without it" >&2
	@command -v /usr/bin/time >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time; } \
	  || echo "could not install time: benchmarking without peak RSS" >&2
	$(VENV)/bin/python bench/bench_cli.py $(BENCH_ARGS)
	$(VENV)/bin/python bench/bench_chip.py $(CHIP_ARGS)
	$(VENV)/bin/python bench/bench_unseal.py $(BENCH_ARGS)

bench-bus: deps
	$(VENV)/bin/python bench/bench_bus_decode.py $(BENCH_ARGS)
# TPM commands of EVE's NV flows, tpmseal next to EVE's real evetpm code (needs ../shared)
bench-eve: deps
	$(VENV)/bin/python bench/bench_eve.py $(BENCH_ARGS)
# The long fuzz run: >= 10^6 mutated inputs over every parser of untrusted bytes (seeded from
# a real swtpm session); reports untyped exceptions, hangs and peak memory (tests/fuzz_run.py).
fuzz: deps
	$(VENV)/bin/python tests/fuzz_run.py $(FUZZ_ARGS)
bench-luks: deps
	$(VENV)/bin/python bench/bench_luks.py $(BENCH_ARGS)

# Boot integration (README: Unlocking at boot); DESTDIR for packaging.
install-boot:
	install -D -m 0755 boot/keyscript $(DESTDIR)/usr/lib/tpmseal/keyscript
	install -D -m 0755 boot/boot-files $(DESTDIR)/usr/lib/tpmseal/boot-files
	install -D -m 0755 boot/tpmseal-unlock $(DESTDIR)/usr/lib/tpmseal/tpmseal-unlock
	install -D -m 0644 boot/tpmseal-unlock@.service $(DESTDIR)/usr/lib/tpmseal/tpmseal-unlock@.service
	install -D -m 0644 boot/tpmseal-unlock@.service $(DESTDIR)/etc/systemd/system/tpmseal-unlock@.service
	install -D -m 0755 boot/initramfs-tools/hooks/tpmseal $(DESTDIR)/etc/initramfs-tools/hooks/tpmseal
	install -D -m 0755 boot/dracut/90tpmseal/module-setup.sh \
	  $(DESTDIR)/usr/lib/dracut/modules.d/90tpmseal/module-setup.sh

clean:
	rm -rf $(VENV) .venv-floor build dist *.egg-info
