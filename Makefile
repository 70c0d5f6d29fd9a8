# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project with what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install browser clean bench bench-state bench-micro simulate soak

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the explorer-page test (Debian packages).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; \
	fi

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python scripts/bench.py --validators 4 --duration 20

bench-state: $(STAMP)
	$(BIN)/python scripts/bench_state.py

# Per-stage CPU per transaction, in process (no cluster): execution, admission, consensus.
bench-micro: $(STAMP)
	$(BIN)/python scripts/bench_execute.py
	$(BIN)/python scripts/bench_admit.py
	$(BIN)/python scripts/bench_consensus.py

simulate: $(STAMP)
	$(BIN)/python scripts/simulate.py --seed-start 0 --seeds 200 --faults all

# The long soak (not in CI): 10,000 seeds, all faults, unpipelined and W = 3
# (about an hour each on a quiet core).
soak: $(STAMP)
	$(BIN)/python scripts/simulate.py --seed-start 0 --seeds 10000 --faults all
	$(BIN)/python scripts/simulate.py --seed-start 0 --seeds 10000 --faults all --pipeline 3

clean:
	rm -rf $(VENV)
