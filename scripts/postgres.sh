#!/usr/bin/env bash
# A PostgreSQL server for the `postgres` tests: installs Debian's postgresql if absent, runs a
# dedicated cluster "biofuse" listening on 127.0.0.1 only, and creates role and database
# biofuse_test. Idempotent; a second call with the server up takes well under a second.
# Prints the SQLAlchemy URL on stdout (everything else goes to stderr), e.g.
#   export BIOFUSE_TEST_POSTGRES_URL=$(scripts/postgres.sh)
set -euo pipefail

PORT=${BIOFUSE_PG_PORT:-5433}  # not 5432: leave a system cluster alone
CLUSTER=biofuse
NAME=biofuse_test
URL="postgresql+psycopg://$NAME:$NAME@127.0.0.1:$PORT/$NAME"

log() { echo "postgres.sh: $*" >&2; }
as_postgres() { runuser -u postgres -- "$@"; }

if [ "$(id -u)" -ne 0 ]; then
  log "needs root (apt-get, pg_createcluster); or point BIOFUSE_TEST_POSTGRES_URL at a server"
  exit 1
fi

# Fast path: the server answers and the test role can log in.
if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p "$PORT" \
  && PGPASSWORD=$NAME psql -qAt -h 127.0.0.1 -p "$PORT" -U $NAME -d $NAME -c 'select 1' \
    >/dev/null 2>&1; then
  echo "$URL"
  exit 0
fi

if ! command -v pg_createcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing PostgreSQL from the Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
fi
VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)

if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION $CLUSTER"; then
  log "creating cluster $VERSION/$CLUSTER on 127.0.0.1:$PORT"
  pg_createcluster "$VERSION" "$CLUSTER" --port "$PORT" >&2
  # loopback only; a throw-away test server, so durability buys nothing
  cat >"/etc/postgresql/$VERSION/$CLUSTER/conf.d/biofuse.conf" <<CONF
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $4}' \
  | grep -q online; then
  log "starting cluster $VERSION/$CLUSTER"
  pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi
for _ in $(seq 50); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.2
done

sql() { as_postgres psql -qAt -p "$PORT" -v ON_ERROR_STOP=1 -c "$1"; }
if [ -z "$(sql "SELECT 1 FROM pg_roles WHERE rolname = '$NAME'")" ]; then
  sql "CREATE ROLE $NAME LOGIN PASSWORD '$NAME'" >&2
fi
if [ -z "$(sql "SELECT 1 FROM pg_database WHERE datname = '$NAME'")" ]; then
  sql "CREATE DATABASE $NAME OWNER $NAME" >&2
fi
echo "$URL"
