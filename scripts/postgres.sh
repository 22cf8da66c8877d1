#!/usr/bin/env bash
# Private, throwaway PostgreSQL cluster for the test suite.
#
#   scripts/postgres.sh start   # ensure running; prints the DSN on stdout
#   scripts/postgres.sh stop    # stop it if running
#   scripts/postgres.sh dsn     # print the DSN of the existing cluster, no side effects
#
# We deliberately do NOT use the distro's system cluster (pg_ctlcluster /
# port 5432): CI boxes have no systemd and developers may have their own
# cluster there. Instead we run our own cluster on 127.0.0.1:${CIKLEK_PG_PORT},
# tuned for speed rather than durability.
#
# Private, not merely throwaway: the cluster lives in a fresh `mktemp -d`
# directory (mode 0700, so no other user can reach its data, socket or
# secrets), TCP logins need the password of role `ciklek` (scram-sha-256), a
# random password drawn once per cluster and kept owner-only in that
# directory, and the superuser can log in only through the Unix socket inside
# it. A pointer file (owner-only, in ~/.cache/ciklek) remembers the cluster,
# so `start` is idempotent: the second call finds the running cluster and
# prints the same DSN.
#
# Only stdout output is the DSN from `start`/`dsn`; everything else goes to
# stderr so callers can do `DSN=$(scripts/postgres.sh start)`.
#
# Exit codes: 0 ok, 1 failure, 2 usage, 3 PostgreSQL missing and we are not
# root (so we can't apt-get it).
set -euo pipefail
umask 077

PG_PORT="${CIKLEK_PG_PORT:-54329}"
DB_USER=ciklek
DB_NAME=ciklek_test
WAIT_SECS=30
# Where the pointer to the cluster lives: the user's own cache dir, never a shared path.
USER_HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
STATE_HOME="${XDG_CACHE_HOME:-${USER_HOME:?cannot tell the home directory}/.cache}/ciklek"
POINTER="$STATE_HOME/postgres.dir"

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

# The cluster's private dir: $BASE/data (the data dir), $BASE/sock (Unix
# socket), $BASE/password (role ciklek's password). Set by use_base.
use_base() {
    BASE="$1"
    PG_DIR="$BASE/data"
    PG_SOCKDIR="$BASE/sock"
    PW_FILE="$BASE/password"
}

# A recorded cluster is used only if it is still what we made: a real
# directory (not a symlink), owned by the cluster's OS user, mode 0700, with a
# data dir and a password file.
valid_base() {
    local base="$1"
    [[ "$base" == /* && -d "$base" && ! -L "$base" ]] || return 1
    [[ "$(stat -c '%U %a' "$base")" == "$PG_OS_USER 700" ]] || return 1
    [[ -f "$base/data/PG_VERSION" && -s "$base/password" && ! -L "$base/password" ]]
}

# The pointer file, if it names a valid cluster; prints its dir.
recorded_base() {
    local base
    [[ -f "$POINTER" && ! -L "$POINTER" ]] || return 1
    base="$(head -n 1 "$POINTER")"
    valid_base "$base" || return 1
    printf '%s\n' "$base"
}

remember_base() {
    local tmp
    tmp="$(mktemp "$STATE_HOME/.postgres.dir.XXXXXXXX")"
    printf '%s\n' "$BASE" >"$tmp"
    mv -f "$tmp" "$POINTER"
}

password() {
    # Root can read the postgres-owned file; a developer reads their own.
    head -n 1 "$PW_FILE"
}

dsn() {
    printf 'postgresql://%s:%s@127.0.0.1:%s/%s\n' "$DB_USER" "$(password)" "$PG_PORT" "$DB_NAME"
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
            rm -f "$f" || true
        fi
    done
}

# A new cluster in a fresh private dir: mktemp -d (0700), handed to the
# postgres user when we are root; the password is drawn here, once. initdb
# runs into a temp dir renamed into place, so $PG_DIR either holds a complete
# cluster or does not exist.
init_cluster() {
    local parent="${TMPDIR:-/tmp}" pw
    use_base "$(mktemp -d "$parent/ciklek-pg.XXXXXXXXXX")"
    # Unix socket paths are limited to ~107 bytes.
    ((${#PG_SOCKDIR} < 80)) || die "socket path $PG_SOCKDIR is too long; set TMPDIR to a shorter dir"
    if [[ $IS_ROOT -eq 1 ]]; then
        chown "$PG_OS_USER": "$BASE"
        as_pg test -w "$BASE" \
            || die "user $PG_OS_USER cannot reach $BASE (a parent dir is not traversable); set TMPDIR"
    fi
    pw="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    as_pg sh -c 'umask 077; mkdir "$1/sock" "$1/data.initdb-tmp"; printf "%s\n" "$2" > "$1/password"' \
        _ "$BASE" "$pw"
    log "initdb $PG_DIR ($("$BINDIR/postgres" --version))"
    # -U postgres gives the same superuser name whether run as root or not.
    as_pg "$BINDIR/initdb" -D "$BASE/data.initdb-tmp" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync >&2
    # The superuser: only through the socket in our 0700 dir. Over TCP, only
    # role ciklek, with its password.
    as_pg sh -c 'cat > "$1/pg_hba.conf"' _ "$BASE/data.initdb-tmp" <<'HBA'
local   all   postgres                 trust
local   all   all                      scram-sha-256
host    all   postgres   0.0.0.0/0     reject
host    all   postgres   ::/0          reject
host    all   all        127.0.0.1/32  scram-sha-256
host    all   all        ::1/128       scram-sha-256
HBA
    as_pg mv "$BASE/data.initdb-tmp" "$PG_DIR"
    remember_base
}

start_server() {
    local logfile="$PG_DIR/server.log"
    clear_stale_locks
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (dir $BASE, log $logfile)"
    # Settings are passed on the command line rather than written to
    # postgresql.conf so that an existing data dir picks up changes to this
    # script (and CIKLEK_PG_PORT) without re-initdb.
    # fsync/synchronous_commit/full_page_writes off: durability is worthless
    # for a test database and these make DDL-heavy tests much faster.
    # 9>&- : don't let the postmaster inherit our flock fd, or the
    # long-lived server would hold the start lock forever.
    if ! as_pg "$BINDIR/pg_ctl" -D "$PG_DIR" -l "$logfile" -w -t "$WAIT_SECS" \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_SOCKDIR -c unix_socket_permissions=0700 -c password_encryption=scram-sha-256 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >&2 9>&-; then
        log "pg_ctl start failed; last lines of $logfile:"
        tail -n 20 "$logfile" >&2 || true
        if [[ -f /tmp/ciklek-pg/postmaster.pid ]]; then
            log "a cluster from an older postgres.sh (/tmp/ciklek-pg) may hold port $PG_PORT: stop it with" \
                "'pg_ctl -D /tmp/ciklek-pg stop' (as its owner), or set CIKLEK_PG_PORT"
        fi
        exit 1
    fi
}

wait_ready() {
    local deadline=$((SECONDS + WAIT_SECS))
    until "$BINDIR/pg_isready" -q -h "$PG_SOCKDIR" -p "$PG_PORT" -d postgres; do
        ((SECONDS < deadline)) || die "server on 127.0.0.1:$PG_PORT not ready after ${WAIT_SECS}s"
        sleep 0.2
    done
}

# Idempotent: creates the role/database only if absent, and resets the
# password so the DSN is valid even if someone changed it. The password goes
# in through psql's standard input, never on a command line (ps would show it).
ensure_role_and_db() {
    as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
        -h "$PG_SOCKDIR" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
\set pw '$(password)'
SELECT format('CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD %L', :'pw')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER')
\gexec
SELECT format('ALTER ROLE $DB_USER LOGIN CREATEDB PASSWORD %L', :'pw')
\gexec
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
    mkdir -p -m 700 "$STATE_HOME"

    # Serialise concurrent starts (e.g. make -j) so two callers don't both
    # initdb or both launch a postmaster.
    exec 9>>"$STATE_HOME/postgres.lock"
    flock -w 120 9 || die "timed out waiting for $STATE_HOME/postgres.lock"

    local base
    if base="$(recorded_base)"; then
        use_base "$base"
        local have want
        have="$(cat "$PG_DIR/PG_VERSION")"
        want="$(basename "$(dirname "$BINDIR")")"
        if [[ "$have" != "$want" ]]; then
            log "$BASE was created by PostgreSQL $have but server $want is installed; making a new cluster"
            init_cluster
        fi
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
            stop_server
            start_server
        fi
    else
        start_server
    fi

    wait_ready
    ensure_role_and_db
    dsn
}

stop_server() {
    # fast = roll back open transactions instead of waiting for clients
    # (test processes may still hold connections).
    as_pg "$BINDIR/pg_ctl" -D "$PG_DIR" -m fast -w -t "$WAIT_SECS" stop >&2
}

cmd_stop() {
    local base
    if ! base="$(recorded_base)"; then
        log "no cluster recorded in $POINTER"
        return 0
    fi
    use_base "$base"
    if ! is_running; then
        log "not running ($BASE)"
        return 0
    fi
    BINDIR="$(find_bindir)" || die "server running but pg_ctl not found"
    log "stopping server in $BASE"
    stop_server
}

cmd_dsn() {
    local base
    base="$(recorded_base)" || die "no cluster yet: run $0 start"
    use_base "$base"
    dsn
}

[[ $# -eq 1 ]] || usage
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    dsn) cmd_dsn ;;
    *) usage ;;
esac
