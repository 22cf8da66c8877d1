#!/usr/bin/env bash
# Private, throwaway PostgreSQL cluster for the test suite.
#
#   scripts/postgres.sh start   # ensure running; prints the DSN on stdout
#   scripts/postgres.sh stop    # stop it if running
#   scripts/postgres.sh dsn     # print the DSN, no side effects
#
# We deliberately do NOT use the distro's system cluster (pg_ctlcluster /
# port 5432): CI boxes have no systemd and developers may have their own
# cluster there. Instead we run our own cluster in ${CIKLEK_PG_DIR} on
# 127.0.0.1:${CIKLEK_PG_PORT}, tuned for speed rather than durability.
#
# Only stdout output is the DSN from `start`/`dsn`; everything else goes to
# stderr so callers can do `DSN=$(scripts/postgres.sh start)`.
#
# Exit codes: 0 ok, 1 failure, 2 usage, 3 PostgreSQL missing and we are not
# root (so we can't apt-get it).
set -euo pipefail

PG_DIR="${CIKLEK_PG_DIR:-/tmp/ciklek-pg}"
PG_PORT="${CIKLEK_PG_PORT:-54329}"
# Unix sockets live in /tmp: the data dir's parent may not be writable by
# the postgres user, and socket paths are limited to ~107 bytes.
PG_SOCKDIR=/tmp
DB_USER=ciklek
DB_PASS=ciklek
DB_NAME=ciklek_test
DSN="postgresql://${DB_USER}:${DB_PASS}@127.0.0.1:${PG_PORT}/${DB_NAME}"
WAIT_SECS=30

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
    echo "usage: $0 {start|stop|dsn}" >&2
    exit 2
}

# PostgreSQL tools (initdb in particular) fail with "could not identify
# current directory" when the cwd isn't readable by the postgres user
# (e.g. /root), so run everything from a neutral directory.
cd /

# Strip a trailing slash so the comparisons/derived paths below are stable.
PG_DIR="${PG_DIR%/}"
[[ "$PG_DIR" == /* ]] || die "CIKLEK_PG_DIR must be an absolute path (got '$PG_DIR')"
[[ "$PG_PORT" =~ ^[0-9]+$ ]] || die "CIKLEK_PG_PORT must be numeric (got '$PG_PORT')"

# PostgreSQL refuses to run as root, so as root we drop to the `postgres`
# system user created by the Debian package; a developer without root runs
# the server as themselves.
if [[ $EUID -eq 0 ]]; then
    IS_ROOT=1
    PG_OS_USER=postgres
else
    IS_ROOT=0
    PG_OS_USER="$(id -un)"
fi

as_pg() {
    if [[ $IS_ROOT -eq 1 ]]; then
        runuser -u "$PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

# Newest installed server version wins (sort -V so 9.6 < 15 < 16).
find_bindir() {
    local ctl
    ctl="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pg_ctl' \
        2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$ctl" ]] && dirname "$ctl"
}

ensure_installed() {
    if BINDIR="$(find_bindir)"; then
        return 0
    fi
    if [[ $IS_ROOT -ne 1 ]]; then
        echo "postgres.sh: PostgreSQL server not installed (no /usr/lib/postgresql/*/bin/pg_ctl); run: sudo apt-get install postgresql" >&2
        exit 3
    fi
    log "PostgreSQL server not found; installing via apt-get (takes a minute)"
    # stdout of apt goes to stderr: our stdout is reserved for the DSN.
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    BINDIR="$(find_bindir)" || die "apt-get installed postgresql but pg_ctl is still missing"
}

# Is $1 the PID of a live postgres process? Checking the command name (not
# just kill -0) matters: in containers PIDs are small and get reused quickly,
# so a postmaster.pid left by a killed run often points at some unrelated
# process, and postgres would then refuse to start. Zombies count as dead:
# a killed postmaster is reparented to PID 1, and container init processes
# often never reap it, so /proc/PID still says "postgres".
is_live_postgres_pid() {
    local pid="$1" comm state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == postgres || "$comm" == postmaster ]] || return 1
    state="$(awk '/^State:/ {print $2; exit}' "/proc/$pid/status" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

pidfile_pid() {
    local f="$PG_DIR/postmaster.pid"
    [[ -r "$f" ]] || return 1
    head -n 1 "$f"
}

is_running() {
    local pid
    pid="$(pidfile_pid)" || return 1
    is_live_postgres_pid "$pid"
}

# Remove lock files left by a killed server so the next start doesn't trip
# over them. The pid file and the socket lock both record the postmaster PID.
clear_stale_locks() {
    local f pid
    for f in "$PG_DIR/postmaster.pid" "$PG_SOCKDIR/.s.PGSQL.$PG_PORT.lock"; do
        [[ -e "$f" ]] || continue
        pid="$(head -n 1 "$f" 2>/dev/null || true)"
        if ! is_live_postgres_pid "$pid"; then
            log "removing stale $f (pid ${pid:-?} is not a running postgres)"
            # Best effort: a non-root user may not own a leftover socket lock.
            rm -f "$f" || true
        fi
    done
}

# initdb into a temp dir and rename it into place, so PG_DIR either holds a
# complete cluster or doesn't exist. A run killed mid-initdb then leaves only
# the temp dir, which we can safely wipe (we never rm -rf PG_DIR itself).
init_cluster() {
    local parent tmp
    parent="$(dirname "$PG_DIR")"
    tmp="$PG_DIR.initdb-tmp"
    mkdir -p "$parent"
    rm -rf "$tmp"
    mkdir -m 700 "$tmp"
    if [[ $IS_ROOT -eq 1 ]]; then
        chown "$PG_OS_USER": "$tmp"
        as_pg test -w "$tmp" \
            || die "user $PG_OS_USER cannot reach $tmp (a parent dir is not traversable); pick another CIKLEK_PG_DIR"
    fi
    log "initdb $PG_DIR ($("$BINDIR/postgres" --version))"
    # trust auth is fine: test-only cluster, loopback + unix socket only.
    # -U postgres gives the same superuser name whether run as root or not.
    as_pg "$BINDIR/initdb" -D "$tmp" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync >&2
    mv "$tmp" "$PG_DIR"
}

start_server() {
    local logfile="$PG_DIR/server.log"
    clear_stale_locks
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (data $PG_DIR, log $logfile)"
    # Settings are passed on the command line rather than written to
    # postgresql.conf so that an existing data dir picks up changes to this
    # script (and CIKLEK_PG_PORT) without re-initdb.
    # fsync/synchronous_commit/full_page_writes off: durability is worthless
    # for a test database and these make DDL-heavy tests much faster.
    # 9>&- : don't let the postmaster inherit our flock fd, or the
    # long-lived server would hold the start lock forever.
    if ! as_pg "$BINDIR/pg_ctl" -D "$PG_DIR" -l "$logfile" -w -t "$WAIT_SECS" \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_SOCKDIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >&2 9>&-; then
        log "pg_ctl start failed; last lines of $logfile:"
        tail -n 20 "$logfile" >&2 || true
        exit 1
    fi
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_SECS))
    until "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres; do
        ((SECONDS < deadline)) || die "server on 127.0.0.1:$PG_PORT not ready after ${WAIT_SECS}s"
        sleep 0.2
    done
}

# Idempotent: creates the role/database only if absent, and resets the
# password so the DSN is valid even if someone changed it.
ensure_role_and_db() {
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" -p "$PG_PORT" -U postgres -d postgres \
        >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASS';
  ELSE
    ALTER ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASS';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME')
\gexec
SQL
}

cmd_start() {
    ensure_installed
    if [[ $IS_ROOT -eq 1 ]] && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
        die "system user '$PG_OS_USER' missing (normally created by the postgresql package)"
    fi

    # Serialise concurrent starts (e.g. make -j) so two callers don't both
    # initdb or both launch a postmaster on the same dir.
    local lockfile="$PG_DIR.lock"
    mkdir -p "$(dirname "$PG_DIR")"
    exec 9>>"$lockfile"
    flock -w 120 9 || die "timed out waiting for $lockfile"

    if [[ -d "$PG_DIR" && ! -f "$PG_DIR/PG_VERSION" ]]; then
        die "$PG_DIR exists but is not a PostgreSQL data dir; remove it or set CIKLEK_PG_DIR"
    fi
    if [[ -f "$PG_DIR/PG_VERSION" ]]; then
        local have want
        have="$(cat "$PG_DIR/PG_VERSION")"
        want="$(basename "$(dirname "$BINDIR")")"
        [[ "$have" == "$want" ]] \
            || die "$PG_DIR was created by PostgreSQL $have but server $want is installed; remove it (rm -rf $PG_DIR)"
    else
        init_cluster
    fi

    if is_running; then
        local running_port
        running_port="$(sed -n 4p "$PG_DIR/postmaster.pid")"
        if [[ "$running_port" == "$PG_PORT" ]]; then
            log "reusing running server (pid $(pidfile_pid)) on port $PG_PORT"
        else
            log "server running on port $running_port, restarting on $PG_PORT"
            cmd_stop
            start_server
        fi
    else
        start_server
    fi

    wait_ready
    ensure_role_and_db
    echo "$DSN"
}

cmd_stop() {
    if ! is_running; then
        log "not running ($PG_DIR)"
        return 0
    fi
    BINDIR="$(find_bindir)" || die "server running but pg_ctl not found"
    log "stopping server in $PG_DIR"
    # fast = roll back open transactions instead of waiting for clients
    # (test processes may still hold connections).
    as_pg "$BINDIR/pg_ctl" -D "$PG_DIR" -m fast -w -t "$WAIT_SECS" stop >&2
}

[[ $# -eq 1 ]] || usage
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    dsn) echo "$DSN" ;;
    *) usage ;;
esac
