# The two commands a user needs are `make demo` and `make test`; every target sets up
# what it needs (.venv, .venv-slither, node_modules, the solc shim) and skips work
# already done.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SLITHER_VENV := .venv-slither
SOLC_VERSION := 0.8.28
ARCH := $(subst x86_64,amd64,$(subst aarch64,arm64,$(shell uname -m)))
FOUNDRY_BIN := $(CURDIR)/node_modules/@foundry-rs/anvil-linux-$(ARCH)/bin
FORGE_BIN := $(CURDIR)/node_modules/@foundry-rs/forge-linux-$(ARCH)/bin

# py-solc-x (and through it ape-solidity) looks for solc-v<version> here; ape-foundry
# starts the first `anvil` on PATH, which must be the platform binary, not the npm wrapper.
export SOLCX_BINARY_PATH := $(CURDIR)/.solcx
export PATH := $(FOUNDRY_BIN):$(FORGE_BIN):$(CURDIR)/$(BIN):$(PATH)

VENV_STAMP := $(VENV)/.installed
SLITHER_STAMP := $(SLITHER_VENV)/.installed
NODE_STAMP := node_modules/.installed
SOLC_SHIM := .solcx/solc-v$(SOLC_VERSION)
BUILD_STAMP := .build/__local__.json

.PHONY: setup compile demo test test-python test-contracts test-devnet forge-test \
	mutants crash-test fuzz lint slither bench clean

setup: $(VENV_STAMP) $(NODE_STAMP) $(SOLC_SHIM)

$(VENV_STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

# slither-analyzer brings solc-select, whose `solc` command downloads a compiler the
# first time it runs. A venv of its own keeps that command off PATH, where
# toolchain/install-solc.sh would take it for a native solc. requirements.lock pins
# slither and all it pulls in, at the versions .venv has.
$(SLITHER_STAMP): requirements.lock
	test -x $(SLITHER_VENV)/bin/python || $(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/pip install --quiet --disable-pip-version-check \
		-c requirements.lock slither-analyzer
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# A native solc of the pinned version wins; otherwise solc-js runs through our shim.
$(SOLC_SHIM): $(NODE_STAMP) toolchain/install-solc.sh
	toolchain/install-solc.sh $(SOLC_VERSION) $@

$(BUILD_STAMP): $(VENV_STAMP) $(NODE_STAMP) $(SOLC_SHIM) ape-config.yaml $(shell find contracts -name '*.sol' -not -path '*/.cache/*')
	$(BIN)/ape compile
	touch $@

compile: $(BUILD_STAMP)

# A simulated business day on a devnet it starts and stops (about two minutes);
# prints the verdict and leaves out/report.html. `posaudit demo --small` is the
# 37-record tour.
demo: compile
	$(BIN)/posaudit demo

# Analyses contracts/*.sol (not contracts/test/) with the filters in slither.config.json
# and fails on any finding of medium or high impact.
slither: $(SLITHER_STAMP) $(NODE_STAMP) $(SOLC_SHIM)
	$(SLITHER_VENV)/bin/slither contracts --config-file slither.config.json \
		--solc $(SOLC_SHIM)

lint: setup slither
	$(BIN)/ruff check posaudit tests scripts forge
	$(BIN)/ruff format --check posaudit tests scripts forge

test-python: compile
	$(BIN)/pytest -q -p no:ape_test tests/python

test-contracts: compile
	$(BIN)/ape test tests/contracts -q

test-devnet: compile
	$(BIN)/ape test tests/contracts -q --network ethereum:local:foundry

# The invariant suite on forge's EVM (forge/test/Invariants.t.sol; seed, runs and depth in
# foundry.toml). forge runs from the platform binary: the npm wrapper exits 0 when tests
# fail.
forge-test: $(NODE_STAMP) $(SOLC_SHIM)
	$(FORGE_BIN)/forge test --match-path forge/test/Invariants.t.sol

# Copies of contracts/ with one guard removed each (forge/mutants.py); fails when the
# invariant suite lets one of them pass. Reuses the build that forge-test leaves: about
# 40 s for the 14 mutants on two cores.
mutants: $(NODE_STAMP) $(SOLC_SHIM)
	FORGE=$(FORGE_BIN)/forge SOLC=$(CURDIR)/$(SOLC_SHIM) $(PYTHON) forge/mutants.py

# The long crash test: 10 trials of 10,000 records, the service SIGKILLed 5 times in
# each while the records flow (make test runs one short trial).
crash-test: compile
	$(BIN)/python -m tests.python.crash_harness 10 10000 out/crash-test 5

# The full gateway fuzz: 1,000 examples per operation and seed, three seeds (make test
# runs 75); about ten minutes of CPU.
fuzz: setup
	POSAUDIT_FUZZ_EXAMPLES=1000 $(BIN)/pytest -q -p no:ape_test tests/python/test_gateway_fuzz.py

test: lint test-python test-contracts test-devnet forge-test mutants

bench: compile
	$(BIN)/posaudit bench

clean:
	rm -rf .build contracts/.cache out forge/out forge/cache
