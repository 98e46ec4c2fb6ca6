# Two entry points (see README): `make demo` and `make test`.
# Both install what they need on a fresh Debian/Ubuntu machine: swtpm, tpm2-tools,
# tshark, cryptsetup, clevis, systemd, initramfs-tools and dracut from apt, tpmseal into a virtual environment in .venv.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := swtpm swtpm-tools tpm2-tools tshark python3-venv cryptsetup-bin clevis clevis-luks \
                clevis-tpm2 systemd initramfs-tools cryptsetup-initramfs dracut-core

.PHONY: demo test lint deps bench bench-eve bench-luks fuzz clean install-boot

$(VENV)/.installed: pyproject.toml
	@command -v swtpm >/dev/null && command -v tpm2_unseal >/dev/null && command -v tshark >/dev/null \
	  && command -v cryptsetup >/dev/null && command -v clevis >/dev/null \
	  && command -v mkinitramfs >/dev/null && command -v dracut >/dev/null \
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
	$(VENV)/bin/ruff check src tests bench

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
	rm -rf $(VENV) build *.egg-info
