# synckit-awareness — every workflow goes through these targets.
#
# `make test` finds PostgreSQL before compiling (tests/support/with-postgres.sh): DATABASE_URL (a
# server where this role may CREATE DATABASE; each test gets its own database), else a Docker
# engine (testcontainers starts postgres:17-alpine), else PostgreSQL's server programs (a
# throwaway cluster under target/, stopped after the run), else it says how to provide one.

CARGO ?= cargo
# The CLI binary (and its tests) need the `cli` feature; the library alone builds without it.
FEATURES ?= --features cli
SCHEMA_DB ?= synckit_schema_check
PG_ADMIN_URL ?= $(or $(DATABASE_URL),postgres://postgres@127.0.0.1:5432/test)
TEST_CONTAINER_LABEL := synckit-awareness-tests

.PHONY: links bench-relay bench-relay-quick prerequisites test test-suite test-faults check fmt lint doc schema-check demo install clean-test-containers help bench bench-quick bench-pooler relay relay-web

help:
	@echo "make demo          run the quickstart (PostgreSQL when DATABASE_URL is set, else in memory)"
	@echo "make relay         the y-websocket presence server on :1234 (PostgreSQL when DATABASE_URL is set; RELAY_ARGS=--help)"
	@echo "make test          all tests (DATABASE_URL, else Docker, else a throwaway local cluster)"
	@echo "make test-faults   PostgreSQL crash-restart and killed backends under load (needs initdb/pg_ctl)"
	@echo "make check         fmt --check, clippy -D warnings, doc, links between the Markdown pages"
	@echo "make schema-check  schema.rs equals diesel print-schema after the migrations"
	@echo "make install       cargo install --path . --features cli (the operator CLI)"
	@echo "make bench         benchmark vs pgbench and Redis (~10 min; docs/performance.md)"
	@echo "make bench-quick   the benchmark at tiny sizes (CI smoke test, judges no time)"
	@echo "make bench-pooler  behind PgBouncer (transaction mode): the store vs pgbench -M extended through it (~4 min)"
	@echo "make bench-relay   presence and documents side by side: this relay vs Hocuspocus + Redis vs y-websocket vs y-sweet when installed (~17 min before the 150-client room and y-sweet were added; longer now)"

# The y-protocols interop test runs the real npm packages pinned in tests/js/package-lock.json;
# `npm ci` reinstalls them only when node_modules is missing or older than the lock file.
tests/js/node_modules/.installed: tests/js/package-lock.json tests/js/package.json
	@command -v npm >/dev/null || { echo "npm missing: install Node.js >= 18 with npm (the y-protocols interop test needs it)"; exit 2; }
	npm ci --prefix tests/js --no-audit --no-fund
	@touch $@

# The relay (examples/relay): its page is bundled from the npm packages pinned in
# examples/relay/web/package-lock.json; its end-to-end test (in `make test`) runs them too.
RELAY_WEB := examples/relay/web
$(RELAY_WEB)/node_modules/.installed: $(RELAY_WEB)/package-lock.json $(RELAY_WEB)/package.json
	@command -v npm >/dev/null || { echo "npm missing: install Node.js >= 18 with npm (the relay's page and its tests need it)"; exit 2; }
	npm ci --prefix $(RELAY_WEB) --no-audit --no-fund
	@touch $@

$(RELAY_WEB)/dist/page.js: $(RELAY_WEB)/node_modules/.installed $(wildcard $(RELAY_WEB)/src/*)
	npm run --prefix $(RELAY_WEB) --silent build

relay-web: $(RELAY_WEB)/dist/page.js

RELAY_ARGS ?=
relay: relay-web
	$(CARGO) run -p synckit-relay --release -- $(RELAY_ARGS)

# Everything `make test` needs besides PostgreSQL (with-postgres.sh checks that one), checked
# before anything is installed or compiled, each with one short message.
CHROMIUM ?= $(firstword $(wildcard /usr/bin/chromium /usr/bin/chromium-browser) $(shell command -v chromium chromium-browser google-chrome 2>/dev/null))
export CHROMIUM
PGBOUNCER ?= $(firstword $(shell command -v pgbouncer 2>/dev/null) $(wildcard /usr/sbin/pgbouncer))
export PGBOUNCER
prerequisites:
	@command -v node >/dev/null && command -v npm >/dev/null || { echo "Node.js and npm missing: install Node.js >= 18 with npm (the interop and relay tests run real npm packages)"; exit 2; }
	@[ -n "$(CHROMIUM)" ] && [ -x "$(CHROMIUM)" ] || { echo "Chromium missing: apt-get install -y chromium (or set CHROMIUM=/path/to/chrome); the relay's browser test drives it"; exit 2; }
	@command -v psql >/dev/null || { echo "psql missing: apt-get install -y postgresql-client (the relay's documents test kills a listener's backend with it)"; exit 2; }
	@[ -n "$(PGBOUNCER)" ] && [ -x "$(PGBOUNCER)" ] || { echo "PgBouncer missing: apt-get install -y pgbouncer (or set PGBOUNCER=/path/to/pgbouncer); the pooler tests run through it"; exit 2; }
	@bin=$$(tests/support/with-postgres.sh --bindir) && [ -x "$$bin/pg_basebackup" ] && command -v openssl >/dev/null || { echo "PostgreSQL's server programs missing (initdb, pg_ctl, pg_basebackup; and openssl): apt-get install -y postgresql openssl (or set PG_BIN to their directory); the TLS, restart and failover tests start their own servers"; exit 2; }

test: prerequisites tests/js/node_modules/.installed $(RELAY_WEB)/dist/page.js
	@tests/support/with-postgres.sh $(MAKE) --no-print-directory test-suite

# The suite itself, with a server already chosen (use `make test`).
test-suite:
	$(CARGO) test --workspace $(FEATURES) --all-targets ; status=$$? ; \
	  $(MAKE) --no-print-directory clean-test-containers ; \
	  [ $$status -eq 0 ] && $(CARGO) test --workspace $(FEATURES) --doc

# The fault tests are #[ignore]d in `make test` (they restart servers); here they run alone,
# one at a time, printing the recovery times they measure.
test-faults:
	$(CARGO) test $(FEATURES) --test faults -- --ignored --nocapture --test-threads=1 ; status=$$? ; \
	  $(MAKE) --no-print-directory clean-test-containers ; exit $$status

check: fmt lint doc links

# Links between the Markdown pages (relative files and #anchors; external ones are not fetched).
links:
	python3 tests/support/check-links.py

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace $(FEATURES) --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc $(FEATURES) --no-deps

# Applies the migrations with diesel CLI to a scratch database, regenerates the schema with
# `diesel print-schema`, and fails when it differs from the committed schema.rs. Also checks
# that every migration reverts (`diesel migration redo --all`).
schema-check:
	@command -v diesel >/dev/null || { echo "diesel CLI missing: cargo install diesel_cli --no-default-features --features postgres"; exit 2; }
	@url=$$(echo "$(PG_ADMIN_URL)" | sed -E 's#(://[^/]*)/[^?]*#\1/$(SCHEMA_DB)#'); \
	psql "$(PG_ADMIN_URL)" -qc "DROP DATABASE IF EXISTS $(SCHEMA_DB) WITH (FORCE)" -c "CREATE DATABASE $(SCHEMA_DB)" && \
	diesel migration run --database-url "$$url" && \
	diesel migration redo --all --database-url "$$url" && \
	diesel print-schema --database-url "$$url" > target/schema.generated.rs && \
	psql "$(PG_ADMIN_URL)" -qc "DROP DATABASE $(SCHEMA_DB) WITH (FORCE)" && \
	diff -u schema.rs target/schema.generated.rs && echo "schema.rs matches the migrations"

# The benchmark needs PostgreSQL (BENCH_DATABASE_URL: a role that may CREATE DATABASE),
# pgbench (PostgreSQL client tools) and Redis (REDIS_ADDR). Results: target/bench/results.md.
# Plaintext, as the Redis peer: the local server negotiates TLS otherwise (about 30 % of a
# loopback round trip); the benchmark shows the store over TLS beside it.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable

bench:
	DATABASE_URL="$(BENCH_DATABASE_URL)" $(CARGO) bench $(FEATURES) --bench awareness -- $(BENCH_ARGS)

bench-quick:
	DATABASE_URL="$(BENCH_DATABASE_URL)" $(CARGO) bench $(FEATURES) --bench awareness -- --quick

# Behind a transaction pooler (issue 28): the store beside `pgbench -M extended` through the same
# PgBouncer (started by the script) and directly; writes target/bench-pooler/results.md.
bench-pooler:
	DATABASE_URL="$(BENCH_DATABASE_URL)" benches/pooler.sh $(BENCH_POOLER_ARGS)

# The presence servers side by side (examples/relay/bench: this relay x1/x2 on PostgreSQL,
# Hocuspocus 4.x x1 and x2 with its Redis extension, y-websocket 1.5.4's server), each with
# its own real client; ~15 min. Needs PostgreSQL (BENCH_DATABASE_URL), Redis, psql, redis-cli.
RELAY_BENCH := examples/relay/bench
$(RELAY_BENCH)/node_modules/.installed: $(RELAY_BENCH)/package-lock.json $(RELAY_BENCH)/package.json
	@command -v npm >/dev/null || { echo "npm missing: install Node.js >= 18 with npm"; exit 2; }
	npm ci --prefix $(RELAY_BENCH) --no-audit --no-fund
	@touch $@

BENCH_RELAY_ARGS ?=
bench-relay: $(RELAY_BENCH)/node_modules/.installed
	$(CARGO) build -p synckit-relay --release
	RELAY_BIN=$(CURDIR)/target/release/synckit-relay DATABASE_URL="$(BENCH_DATABASE_URL)" node $(RELAY_BENCH)/bench.mjs $(BENCH_RELAY_ARGS)

bench-relay-quick:
	$(MAKE) --no-print-directory bench-relay BENCH_RELAY_ARGS="--quick $(BENCH_RELAY_ARGS)"

demo:
	$(CARGO) run $(FEATURES) --quiet --example quickstart

install:
	$(CARGO) install --path . --features cli

clean-test-containers:
	@ids=$$(docker ps -aq --filter label=$(TEST_CONTAINER_LABEL) 2>/dev/null); \
	  [ -z "$$ids" ] || docker rm -f $$ids >/dev/null
