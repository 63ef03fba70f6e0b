# Kura: the two commands are `make dev` and `make test` (see README.md).
# The cargo target dir lives outside the clone so fresh clones (CI) build incrementally.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/kura/target
CARGO ?= cargo
DATA_DIR ?= ./kura-data
PORT ?= 9000

.PHONY: dev build test test-tls test-all deps deps-test fmt clippy bench release clean-data

## Install what is missing, build, and run a local cluster (S3 on 127.0.0.1:$(PORT)).
dev: deps build
	$(CARGO_TARGET_DIR)/debug/kura dev --data-dir $(DATA_DIR) --port $(PORT)

build:
	$(CARGO) build --workspace --bins

deps:
	@scripts/install-deps.sh build

deps-test:
	@scripts/install-deps.sh test

# Tests build everything with failpoints (tests/failpoints.rs crashes processes
# at chosen lines through them); `make dev`, `make build` and releases do not.
# One feature set for the build and the test run, so the workspace compiles once.
TEST_FEATURES ?= --features failpoints

## Install what is missing and run the default test suite (unit + end-to-end).
test: deps-test
	$(CARGO) build --workspace --bins $(TEST_FEATURES)
	$(CARGO) nextest run --workspace --no-fail-fast $(TEST_FEATURES)

## The default suite with every test cluster started by `kura dev --tls`
## (mutual TLS inside, HTTPS on the S3 port; docs/security.md).
test-tls: deps-test
	$(CARGO) build --workspace --bins $(TEST_FEATURES)
	KURA_TEST_TLS=1 $(CARGO) nextest run --workspace --no-fail-fast $(TEST_FEATURES)

## Everything, including the slow suites (marked #[ignore]).
test-all: deps-test
	$(CARGO) build --workspace --bins $(TEST_FEATURES)
	$(CARGO) nextest run --workspace --no-fail-fast --run-ignored all $(TEST_FEATURES)

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets

release: deps
	$(CARGO) build --release --workspace --bins

## Benchmark against a running `make dev` cluster (release build recommended);
## BENCH="put --obj.size 1MiB --duration 30s" runs one load subcommand instead
## (put get mixed list stat delete multipart; see docs/performance.md).
bench: release
	$(CARGO_TARGET_DIR)/release/kura bench $(BENCH) --data-dir $(DATA_DIR)

clean-data:
	rm -rf $(DATA_DIR)
