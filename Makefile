# `make bench` and `make test` work on a fresh Linux machine: they create venv/ from requirements.txt,
# install the Debian packages optional features need (when run as root), then run.
PYTHON ?= python3
VENV := venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := libjemalloc2 libtcmalloc-minimal4 numactl chromium

.PHONY: bench test test-avx2 lint format sysdeps clean cluster-e2e

bench: $(STAMP) sysdeps
	$(PY) bench.py

test: $(STAMP) sysdeps lint
	$(PY) -m pytest -q

# The whole suite as if on a Zen 3 without AVX-512 or bf16 (hwctl reads BENCH_CPUINFO instead of /proc/cpuinfo):
# no test may depend on the CPU that runs it.
test-avx2: $(STAMP) sysdeps
	BENCH_CPUINFO=$(CURDIR)/tests/fixtures/cpuinfo-zen3-avx2 $(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Optional features (jemalloc/tcmalloc allocators, numactl, chromium for the browser checks) report themselves unavailable without
# these packages, so a failed install is a warning, not an error; each is installed on its own, so one that fails
# (chromium is the largest) leaves the others.
sysdeps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "note: optional Debian packages missing:$$missing (install them as root to enable those features)"; exit 0; fi; \
	echo "installing Debian packages:$$missing"; \
	apt-get update -qq || echo "warning: apt-get update failed; installing from the lists there are"; \
	for p in $$missing; do \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p >/dev/null \
			|| echo "warning: could not install $$p; the features that need it will be reported unavailable"; \
	done

# cluster.yaml end to end on this machine (root): sshd on two loopback addresses, `ray up`, a tiny plan
# on both nodes, `ray down`. About 2 minutes the first time (it builds the venv in ~/cpu-pretrain-bench),
# 75 s after; README.md, "Many hosts".
cluster-e2e: $(STAMP)
	$(PY) scripts/cluster_e2e.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
