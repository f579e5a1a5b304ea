# ckpt-ledger: `make demo` runs the demo, `make test` runs every test (CI calls it).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# what `make test` installs: the test tools, PostgreSQL's driver (its tests run when the server
# answers), and libvirt-python when libvirt's headers are there to build it
EXTRAS ?= dev,postgres$(shell pkg-config --exists libvirt 2>/dev/null && echo ,libvirt)
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: demo test lint typecheck venv bench clean

# the demo needs the package only (quietly: `make demo` prints the demo's output, as README shows)
$(BIN)/ckpt-ledger: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e .
	@touch $@

$(STAMP): pyproject.toml $(BIN)/ckpt-ledger
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)

demo: $(BIN)/ckpt-ledger
	@$(BIN)/ckpt-ledger demo

lint: venv
	$(BIN)/ruff check ledger backends adapters cli tests $(wildcard bench)
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy ledger backends adapters cli

# two workers for the suite (crash, concurrency and store tests spread over both cores), then
# the end-to-end tests against the one real QEMU guest, alone
test: venv lint typecheck
	$(BIN)/pytest -q -n 2 --dist worksteal --ignore=tests/e2e
	$(BIN)/pytest -q tests/e2e

# `make bench BENCH_ARGS=--quick` for a 10x smaller run; the data is cached in bench/.data
bench: venv
	$(BIN)/python -c 'import eventsourcing' 2>/dev/null || $(BIN)/pip install -q -e '.[$(EXTRAS),bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
