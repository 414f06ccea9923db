# Root Makefile: `make` builds the course-mode replica ./3700kvstore (the course's
# convention), `make harness` runs our own course harness on every scenario.
# Cargo honours CARGO_TARGET_DIR; so does this file.

CARGO ?= cargo
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
HARNESS := $(TARGET_DIR)/release/kvharness
# Scenarios CI runs (short, one per fault kind that needs no long setup).
QUICK_SCENARIOS := configs/course/simple-1.json configs/course/crash-3.json
# Runs per scenario for `make harness` (the acceptance bar is 3 in a row).
RUNS ?= 1
# Seed of run 1 of every scenario (run k uses SEED + k - 1); empty: a fresh one. The
# bar's results in bench/results/course/ use 4242, so before/after runs compare.
SEED ?=

.PHONY: all 3700kvstore clean harness harness-quick harness-bin

all: 3700kvstore

3700kvstore:
	$(CARGO) build --release -p kv-course --bin 3700kvstore
	cp $(TARGET_DIR)/release/3700kvstore ./3700kvstore

harness-bin:
	$(CARGO) build --release -p kv-harness --bin kvharness

# Every scenario in configs/course, then the one-line-per-scenario summary table.
harness: 3700kvstore harness-bin
	$(HARNESS) all --runs $(RUNS) $(if $(SEED),--seed $(SEED)) --replica ./3700kvstore

# Two short scenarios, for CI and quick checks.
harness-quick: 3700kvstore harness-bin
	$(HARNESS) $(QUICK_SCENARIOS) --replica ./3700kvstore

clean:
	rm -f ./3700kvstore
	$(CARGO) clean --release -p kv-course

# The quick start: a local 3-node cluster (embedded config, ports 7101-7103, data in
# data/local, keys created on first use in data/local/keys) and the kvcli REPL on it;
# the nodes stop when the REPL exits.
.PHONY: local
local:
	$(CARGO) build --release -p kv-server --bin kvserver -p kvcli --bin kvcli
	$(TARGET_DIR)/release/kvcli --local

# The long fuzz campaign (docs/FUZZING.md): every target in turn under libFuzzer
# (nightly), each until FUZZ_RUNS inputs or FUZZ_SECONDS seconds.
FUZZ_RUNS ?= 1000000
FUZZ_SECONDS ?= 3600
.PHONY: fuzz
fuzz:
	FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_TARGETS)
