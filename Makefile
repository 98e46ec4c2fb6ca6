# Two entry points (see README): `make demo` and `make test`.
# Both install what they need on a fresh Debian/Ubuntu machine: swtpm, tpm2-tools and
# tshark from apt, tpmseal into a virtual environment in .venv.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := swtpm swtpm-tools tpm2-tools tshark python3-venv systemd cryptsetup-bin

.PHONY: demo test lint deps bench clean

$(VENV)/.installed: pyproject.toml
	@command -v swtpm >/dev/null && command -v tpm2_unseal >/dev/null && command -v tshark >/dev/null && test -x /lib/systemd/systemd-measure \
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

bench: deps
	@/usr/bin/python3 -c 'import tpm2_pytss' 2>/dev/null \
	  || { $(SUDO) apt-get update -qq && \
	       $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-tpm2-pytss; } \
	  || echo "could not install python3-tpm2-pytss: benchmarking without it" >&2
	$(VENV)/bin/python bench/bench_unseal.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
