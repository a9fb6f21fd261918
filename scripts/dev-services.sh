#!/usr/bin/env bash
# Make sure the local development services are up, then make sure the `plangrep` database
# exists (DESIGN.md §5, TOOLCHAIN.md "Services").
#
#   PostgreSQL  127.0.0.1:5432, user postgres, trust auth
#   RabbitMQ    127.0.0.1:5672, guest/guest
#
# For each service, in order:
#   a. something already listens on the port  -> use it (never touched, never restarted);
#   b. the server is installed                 -> start it;
#   c. Debian/Ubuntu, apt-get and root         -> apt-get install it, then start it;
#   d. otherwise                               -> say exactly what is missing and exit 1.
#
# Idempotent, and quiet when everything already runs: one line per service.
#
# DATABASE_URL / AMQP_URL are honoured for host, port, user and database name. Only a local
# host (127.0.0.1 / localhost / ::1) is ever started or installed; a remote one is just
# checked for reachability.
set -euo pipefail

readonly WAIT_SECONDS="${DEV_SERVICES_WAIT_SECONDS:-60}"
readonly DEFAULT_DATABASE_URL="postgres://postgres@127.0.0.1:5432/plangrep"
readonly DEFAULT_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"

log() { printf '%s\n' "$*"; }
die() { printf 'dev-services: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# Parse scheme://[user[:password]@]host[:port][/path][?query] into URL_* variables.
parse_url() {
    local url="$1" default_port="$2" rest userinfo hostport
    rest="${url#*://}"
    URL_USER="" URL_PASSWORD="" URL_PATH=""
    if [[ "$rest" == *@* ]]; then
        userinfo="${rest%%@*}"
        rest="${rest#*@}"
        URL_USER="${userinfo%%:*}"
        if [[ "$userinfo" == *:* ]]; then URL_PASSWORD="${userinfo#*:}"; fi
    fi
    hostport="${rest%%[/?]*}"
    rest="${rest#"$hostport"}"
    if [[ "$rest" == /* ]]; then
        URL_PATH="${rest#/}"
        URL_PATH="${URL_PATH%%\?*}"
    fi
    if [[ "$hostport" == \[*\]* ]]; then # [::1]:5432
        URL_HOST="${hostport%%]*}"
        URL_HOST="${URL_HOST#[}"
        hostport="${hostport#*]}"
        URL_PORT="${hostport#:}"
    elif [[ "$hostport" == *:* ]]; then
        URL_HOST="${hostport%%:*}"
        URL_PORT="${hostport#*:}"
    else
        URL_HOST="$hostport"
        URL_PORT=""
    fi
    URL_HOST="${URL_HOST:-127.0.0.1}"
    URL_PORT="${URL_PORT:-$default_port}"
}

is_local() { [[ "$1" == "127.0.0.1" || "$1" == "localhost" || "$1" == "::1" ]]; }

# True when an AMQP 0-9-1 broker answers on host:port: send the protocol header and expect
# the first byte of a Connection.Start method frame (frame type 1).
amqp_answers() {
    local first
    # shellcheck disable=SC2016 # $1/$2 expand in the inner bash, on purpose.
    first="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "AMQP\x00\x00\x09\x01" >&3 && head -c 1 <&3 | od -An -tx1' _ "$1" "$2" 2>/dev/null)" || return 1
    [[ "${first// /}" == "01" ]]
}

# wait_for SECONDS COMMAND...: poll COMMAND once a second until it succeeds or SECONDS pass.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

can_apt_install() {
    [[ -r /etc/debian_version ]] && have apt-get && [[ "$(id -u)" -eq 0 ]]
}

APT_UPDATED=0
apt_install() {
    log "installing with apt-get: $*"
    export DEBIAN_FRONTEND=noninteractive
    if ((APT_UPDATED == 0)); then
        apt-get update -qq
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- PostgreSQL --------------------------------------------------------------------------

# The newest installed PostgreSQL version that has a `main` cluster (empty if none).
pg_version() {
    local dir versions=()
    for dir in /etc/postgresql/*/main; do
        [[ -d "$dir" ]] && versions+=("$(basename "$(dirname "$dir")")")
    done
    ((${#versions[@]} > 0)) || return 0
    printf '%s\n' "${versions[@]}" | sort -V | tail -1
}

pg_installed() { have pg_ctlcluster && [[ -n "$(pg_version)" ]]; }

pg_missing_what() {
    if ! have pg_ctlcluster; then
        echo "no pg_ctlcluster (postgresql-common)"
    else
        echo "no cluster /etc/postgresql/<version>/main (create one with pg_createcluster <version> main)"
    fi
}

# pg_isready: 0 accepting connections, 1 rejecting (starting up), 2 no response.
pg_status() {
    local rc=0
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 || rc=$?
    echo "$rc"
}

pg_ready() { [[ "$(pg_status)" == 0 ]]; }

# A query as the configured user over TCP, never prompting for a password.
pg_query() {
    psql -X -w -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -Atc "$1"
}

pg_login_ok() { pg_query 'SELECT 1' >/dev/null 2>&1; }

# Debian's PostgreSQL uses scram for TCP: switch 127.0.0.1 and ::1 to trust (only for a
# cluster this script started or installed).
pg_make_tcp_trust() {
    local version="$1" hba
    pg_login_ok && return 0
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    [[ -w "$hba" ]] \
        || die "postgres: TCP login as '$PG_USER' fails and $hba is not writable; make 127.0.0.1 'trust' there and reload"
    if ! grep -q '^# plangrep dev-services: trust local TCP' "$hba"; then
        log "postgres: setting 127.0.0.1 and ::1 to trust in $hba"
        {
            printf '# plangrep dev-services: trust local TCP (development only)\n'
            printf 'host    all    all    127.0.0.1/32    trust\n'
            printf 'host    all    all    ::1/128         trust\n'
            cat "$hba"
        } >"$hba.plangrep.tmp"
        chown --reference="$hba" "$hba.plangrep.tmp"
        chmod --reference="$hba" "$hba.plangrep.tmp"
        mv "$hba.plangrep.tmp" "$hba"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    wait_for "$WAIT_SECONDS" pg_login_ok \
        || die "postgres: TCP login as '$PG_USER' still fails after making $hba trust"
}

pg_start_installed() {
    local version
    version="$(pg_version)"
    if pg_ctlcluster "$version" main status >/dev/null 2>&1; then
        log "postgres: cluster $version/main is running but not ready on $PG_HOST:$PG_PORT yet; waiting"
    else
        log "postgres: starting cluster $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    wait_for "$WAIT_SECONDS" pg_ready \
        || die "postgres: cluster $version/main is not accepting connections on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s (check 'port' and 'listen_addresses' in /etc/postgresql/$version/main/postgresql.conf)"
    pg_make_tcp_trust "$version"
    log "postgres: started on $PG_HOST:$PG_PORT"
}

ensure_postgres() {
    local status
    if ! have psql || ! have pg_isready || ! have createdb; then
        if can_apt_install; then
            apt_install postgresql-client
        else
            die "postgres: the PostgreSQL client tools (psql, pg_isready, createdb) are missing; install postgresql-client"
        fi
    fi

    status="$(pg_status)"
    if [[ "$status" == 0 || "$status" == 1 ]]; then
        wait_for "$WAIT_SECONDS" pg_ready \
            || die "postgres: the server on $PG_HOST:$PG_PORT still rejects connections after ${WAIT_SECONDS}s"
        log "postgres: already running on $PG_HOST:$PG_PORT"
    elif ! is_local "$PG_HOST"; then
        die "postgres: nothing answers on $PG_HOST:$PG_PORT (a remote host from DATABASE_URL is never started here)"
    elif pg_installed; then
        pg_start_installed
    elif can_apt_install; then
        apt_install postgresql
        pg_installed || die "postgres: apt-get installed postgresql, but: $(pg_missing_what)"
        pg_start_installed
    else
        die "postgres: nothing answers on $PG_HOST:$PG_PORT, no PostgreSQL server is installed ($(pg_missing_what)), and it cannot be installed here (that needs Debian/Ubuntu, apt-get and root). Install PostgreSQL (15) listening on $PG_HOST:$PG_PORT with trust auth for user '$PG_USER'."
    fi

    pg_login_ok \
        || die "postgres: cannot log in as '$PG_USER' over TCP at $PG_HOST:$PG_PORT without a password; add 'host all all 127.0.0.1/32 trust' to pg_hba.conf (or put the password in DATABASE_URL) and reload"

    if ! pg_query "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1; then
        createdb -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$PG_DB"
        log "postgres: created database $PG_DB"
    fi
}

# --- RabbitMQ ----------------------------------------------------------------------------

rabbit_installed() { have rabbitmq-server && have rabbitmqctl; }

rabbit_ready() { amqp_answers "$AMQP_HOST" "$AMQP_PORT"; }

rabbit_node_up() { rabbitmqctl -q ping >/dev/null 2>&1; }

rabbit_start_installed() {
    # A node that is up but not listening yet is waited for, never started a second time.
    if rabbit_node_up; then
        log "rabbitmq: node is running but not ready on $AMQP_HOST:$AMQP_PORT yet; waiting"
    else
        log "rabbitmq: starting rabbitmq-server"
        rabbitmq-server -detached
    fi
    wait_for "$WAIT_SECONDS" rabbit_node_up \
        || die "rabbitmq: the node did not come up within ${WAIT_SECONDS}s (see /var/log/rabbitmq/)"
    rabbitmqctl -q -t "$WAIT_SECONDS" await_startup >/dev/null \
        || die "rabbitmq: the node did not finish booting within ${WAIT_SECONDS}s (see /var/log/rabbitmq/)"
    wait_for "$WAIT_SECONDS" rabbit_ready \
        || die "rabbitmq: the node is up but no AMQP listener answers on $AMQP_HOST:$AMQP_PORT (check listeners.tcp in rabbitmq.conf)"
    log "rabbitmq: started on $AMQP_HOST:$AMQP_PORT"
}

ensure_rabbitmq() {
    if rabbit_ready; then
        log "rabbitmq: already running on $AMQP_HOST:$AMQP_PORT"
    elif ! is_local "$AMQP_HOST"; then
        die "rabbitmq: no AMQP broker answers on $AMQP_HOST:$AMQP_PORT (a remote host from AMQP_URL is never started here)"
    elif rabbit_installed; then
        rabbit_start_installed
    elif can_apt_install; then
        apt_install rabbitmq-server
        rabbit_installed || die "rabbitmq: apt-get installed rabbitmq-server but rabbitmq-server/rabbitmqctl are not on PATH"
        rabbit_start_installed
    else
        die "rabbitmq: no AMQP broker answers on $AMQP_HOST:$AMQP_PORT, RabbitMQ is not installed (no rabbitmq-server/rabbitmqctl on PATH), and it cannot be installed here (that needs Debian/Ubuntu, apt-get and root). Install RabbitMQ listening on $AMQP_HOST:$AMQP_PORT with the guest/guest user."
    fi
}

# --- main --------------------------------------------------------------------------------

parse_url "${DATABASE_URL:-$DEFAULT_DATABASE_URL}" 5432
PG_HOST="$URL_HOST" PG_PORT="$URL_PORT"
PG_USER="${URL_USER:-postgres}" PG_DB="${URL_PATH:-plangrep}"
if [[ -n "$URL_PASSWORD" ]]; then export PGPASSWORD="$URL_PASSWORD"; fi
[[ "$PG_DB" =~ ^[A-Za-z0-9_]+$ ]] || die "DATABASE_URL: database name '$PG_DB' must match [A-Za-z0-9_]+"

parse_url "${AMQP_URL:-$DEFAULT_AMQP_URL}" 5672
AMQP_HOST="$URL_HOST" AMQP_PORT="$URL_PORT"

ensure_postgres
ensure_rabbitmq

# --- S3-compatible object store (SeaweedFS) ----------------------------------------------
# The S3 storage tests and `PLANGREP_STORAGE_URL=s3://…` need one: see scripts/s3-server.sh.
"$(dirname "${BASH_SOURCE[0]}")/s3-server.sh"
