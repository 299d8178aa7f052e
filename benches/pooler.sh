#!/usr/bin/env bash
# `make bench-pooler`: a PgBouncer in transaction mode (the harness' settings: Debian's 1.18,
# default_pool_size = 20) in front of DATABASE_URL's server, on a free port, then
# examples/pooler_cost.rs (the store beside `pgbench -M extended` through it and directly).
# Args: seconds per run, rounds (default 3 3). Stops the PgBouncer on exit.
set -euo pipefail
url=${DATABASE_URL:?set DATABASE_URL (direct, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)}
pgbouncer=${PGBOUNCER:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}
[ -x "$pgbouncer" ] || { echo "PgBouncer missing: apt-get install -y pgbouncer (or set PGBOUNCER)"; exit 2; }
command -v pgbench >/dev/null || { echo "pgbench missing: install the PostgreSQL client programs"; exit 2; }
read -r host port user pooler_url < <(python3 - "$url" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
s = socket.socket(); s.bind(("127.0.0.1", 0)); free = s.getsockname()[1]; s.close()
netloc = u.netloc.rsplit("@", 1)
auth = netloc[0] + "@" if len(netloc) == 2 else ""
print(u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres",
      urllib.parse.urlunsplit((u.scheme, f"{auth}127.0.0.1:{free}", u.path, u.query, "")))
PY
)
pooler_port=${pooler_url##*127.0.0.1:}; pooler_port=${pooler_port%%/*}
dir=$(mktemp -d /tmp/synckit-bench-pooler-XXXX)
cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=$host port=$port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pooler_port
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 20
# Idle server connections close within seconds, so that pgbench directly at 64 clients finds
# room under max_connections = 100 after the pooled sides ran.
server_idle_timeout = 1
ignore_startup_parameters = extra_float_digits,options,application_name
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
echo "\"$user\" \"\"" > "$dir/users.txt"
as=()
if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir"; as=(-u postgres); fi
"$pgbouncer" -d "${as[@]}" "$dir/pgbouncer.ini"
trap 'kill "$(cat "$dir/pgbouncer.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$dir/pgbouncer.pid" ] && break; sleep 0.1; done
"$pgbouncer" --version | head -1
mkdir -p target/bench-pooler
DATABASE_URL="$url" POOLER_URL="$pooler_url" cargo run --release --quiet --example pooler_cost -- "${1:-3}" "${2:-3}" \
  | tee target/bench-pooler/results.md
