#!/usr/bin/env bash
# Runs the command given as arguments with a PostgreSQL server for the tests, chosen before
# anything is compiled, in this order:
#   1. DATABASE_URL, when set (a server where this role may CREATE DATABASE);
#   2. a Docker engine that answers: DATABASE_URL stays unset and the tests start
#      postgres:17-alpine through testcontainers;
#   3. PostgreSQL's server programs (initdb, pg_ctl) on this machine: a throwaway cluster under
#      target/test-postgres, started once here and stopped (and deleted) when the command ends;
#   4. none of these: one short message naming the three ways, and exit 2 before compiling.
# Used by `make test`; usable alone: tests/support/with-postgres.sh cargo test --test conformance
# `with-postgres.sh --bindir` only prints where PostgreSQL's programs are (the one place that
# looks for them: tests/support/cluster.rs and the benchmark's pgbench lookup ask here).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

redact() { sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#'; }

# PostgreSQL's server programs: PG_BIN, else pg_config --bindir, else the newest
# /usr/lib/postgresql/*/bin, else initdb on PATH.
find_bindir() {
  bindir=${PG_BIN:-}
  if [ -z "$bindir" ] && command -v pg_config >/dev/null 2>&1; then
    candidate=$(pg_config --bindir 2>/dev/null || true)
    if [ -x "$candidate/initdb" ]; then bindir=$candidate; fi
  fi
  if [ -z "$bindir" ]; then
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
      if [ -x "$candidate/initdb" ]; then bindir=$candidate; fi
    done
  fi
  if [ -z "$bindir" ] && command -v initdb >/dev/null 2>&1; then
    bindir=$(dirname "$(command -v initdb)")
  fi
  return 0
}

if [ "${1:-}" = --bindir ]; then
  find_bindir
  [ -n "$bindir" ] && [ -x "$bindir/pg_ctl" ] || exit 2
  echo "$bindir"
  exit 0
fi

if [ -n "${DATABASE_URL:-}" ]; then
  echo "tests use DATABASE_URL ($(printf '%s' "$DATABASE_URL" | redact))" >&2
  exec "$@"
fi

if [ -z "${SYNCKIT_TEST_NO_DOCKER:-}" ] && command -v docker >/dev/null 2>&1 \
  && timeout 15 docker info >/dev/null 2>&1; then
  echo "tests start PostgreSQL 17 through Docker (testcontainers, image postgres:17-alpine)" >&2
  exec "$@"
fi

find_bindir
if [ -z "$bindir" ] || [ ! -x "$bindir/pg_ctl" ]; then
  cat >&2 <<'MSG'
make test needs PostgreSQL and found none. Give it one of:
  1. DATABASE_URL=postgres://user@host:5432/db make test   (a role that may CREATE DATABASE)
  2. a running Docker engine (the tests start postgres:17-alpine with testcontainers)
  3. PostgreSQL's server programs (e.g. apt-get install postgresql, brew install postgresql;
     or PG_BIN=/path/to/bin): the tests then run a throwaway cluster under target/
MSG
  exit 2
fi

dir="$root/target/test-postgres"
data="$dir/data"
# initdb refuses to run as root: as root, the cluster belongs to the `postgres` user.
as_owner() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  owner=postgres
  id "$owner" >/dev/null 2>&1 || useradd --system --no-create-home "$owner"
  as_owner() { runuser -u "$owner" -- "$@"; }
fi

# A cluster left behind by an interrupted run is stopped and replaced.
if [ -f "$data/postmaster.pid" ]; then
  as_owner "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
fi
rm -rf "$dir"
mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then
  chown "$owner" "$dir"
  # The owner must reach the directory through target/ and the checkout.
  path=$dir
  while [ "$path" != / ]; do
    path=$(dirname "$path")
    if ! runuser -u "$owner" -- test -x "$path"; then chmod o+x "$path"; fi
  done
fi

port=""
for candidate in $(seq 54329 54429); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
done
[ -n "$port" ] || { echo "no free port in 54329-54429 for the test cluster" >&2; exit 2; }

echo "tests run a throwaway PostgreSQL cluster ($bindir, port $port, $dir)" >&2
as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
  --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 2; }

stop() {
  as_owner "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Settings for a disposable test server: nothing needs to survive a crash.
as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off \
      -c synchronous_commit=off -c full_page_writes=off" start >/dev/null \
  || { cat "$dir/server.log" >&2; exit 2; }

status=0
DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres" "$@" || status=$?
exit "$status"
