#!/usr/bin/env bash
# A PostgreSQL primary and a streaming standby (pg_basebackup -R) under one directory, for
# failover tests: what a managed HA PostgreSQL does (promote the standby), on this machine.
#
#   pg-pair.sh init DIR PORT_A PORT_B [sync]  primary on PORT_A, standby of it on PORT_B;
#                                             `sync`: synchronous replication (a commit returns
#                                             once the standby has it)
#   pg-pair.sh failover DIR [PAUSE]  stops the primary as a crash does (-m immediate), waits
#                             PAUSE seconds (default 0: a failover detector's delay), promotes
#                             the standby and returns once it takes writes (prints seconds taken)
#   pg-pair.sh rebuild DIR    a new standby of the new primary on the old primary's port
#                             (the old data directory is dropped, as after a real failover)
#   pg-pair.sh primary DIR    the current primary's port
#   pg-pair.sh stop DIR       stops both and deletes DIR
#
# Programs: where with-postgres.sh --bindir finds them. As root, they run as `postgres`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$("$here/with-postgres.sh" --bindir) || {
  echo "pg-pair.sh: no initdb/pg_ctl/pg_basebackup: apt-get install postgresql, or set PG_BIN" >&2
  exit 2
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:?usage: pg-pair.sh init|failover|rebuild|primary|stop DIR ...}
dir=${2:?DIR missing}

port_of() { cat "$dir/$1.port"; }
other() { if [ "$1" = a ]; then echo b; else echo a; fi; }
pgctl() { as_pg "$bin/pg_ctl" -D "$dir/$1" -l "$dir/$1.log" "${@:2}"; }

accepts_writes() {
  as_pg "$bin/psql" -XtA -h 127.0.0.1 -p "$(port_of "$1")" -U postgres -d postgres \
    -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null | grep -qx t
}

standby_of() { # standby_of PRIMARY NODE: a fresh standby NODE streaming from PRIMARY
  local primary=$1 node=$2
  as_pg rm -rf "$dir/$node"
  as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$(port_of "$primary")" -U postgres \
    -D "$dir/$node" -R -X stream -c fast --no-sync
  # The copied postgresql.conf names the primary's port; the later line wins.
  echo "port = $(port_of "$node")" | as_pg tee -a "$dir/$node/postgresql.conf" >/dev/null
  pgctl "$node" start -w -t 60 >/dev/null
}

case $cmd in
  init)
    port_a=${3:?PORT_A missing}
    port_b=${4:?PORT_B missing}
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    echo "$port_a" >"$dir/a.port"
    echo "$port_b" >"$dir/b.port"
    as_pg "$bin/initdb" -D "$dir/a" -A trust -U postgres --no-sync >/dev/null
    # TLS on, as on Debian's and managed servers (sslmode=prefer negotiates it); a
    # self-signed certificate, copied to the standby by pg_basebackup.
    as_pg openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
      -keyout "$dir/a/server.key" -out "$dir/a/server.crt" 2>/dev/null
    as_pg chmod 600 "$dir/a/server.key"
    {
      echo "port = $port_a"
      echo "listen_addresses = '127.0.0.1'"
      echo "unix_socket_directories = '$dir'"
      echo "max_connections = 200"
      echo "wal_level = replica"
      echo "wal_keep_size = 256MB"
      echo "ssl = on"
      if [ "${5:-}" = sync ]; then echo "synchronous_standby_names = '*'"; fi
    } | as_pg tee -a "$dir/a/postgresql.conf" >/dev/null
    pgctl a start -w -t 60 >/dev/null
    echo a >"$dir/primary"
    standby_of a b
    ;;
  failover)
    old=$(cat "$dir/primary")
    new=$(other "$old")
    started=$(date +%s.%N)
    pgctl "$old" stop -m immediate -w >/dev/null
    sleep "${3:-0}"
    pgctl "$new" promote -w -t 60 >/dev/null
    until accepts_writes "$new"; do sleep 0.05; done
    echo "$new" >"$dir/primary"
    awk "BEGIN { printf \"%.2f\\n\", $(date +%s.%N) - $started }"
    ;;
  rebuild)
    primary=$(cat "$dir/primary")
    standby_of "$primary" "$(other "$primary")"
    ;;
  primary)
    port_of "$(cat "$dir/primary")"
    ;;
  stop)
    for node in a b; do
      [ -d "$dir/$node" ] && pgctl "$node" stop -m immediate -w >/dev/null 2>&1 || true
    done
    rm -rf "$dir"
    ;;
  *)
    echo "pg-pair.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
