#!/usr/bin/env bash
# `make run`: the whole platform on this machine, in dev mode (DESIGN.md §5).
#
# Makes sure PostgreSQL and RabbitMQ are up (scripts/dev-services.sh), builds the three
# services, starts them with the ports of DESIGN.md §4, waits until the gateway is ready,
# and prints a copy-paste walkthrough. Ctrl-C stops everything this script started.
#
# Dev mode: PLANGREP_DEV_MODE=true, PLANGREP_WEBHOOK_ALLOW_INSECURE=true (http and local
# webhook receivers), an admin token from PLANGREP_ADMIN_TOKEN or a generated one, and the
# fixed dev-mode internal gRPC token when PLANGREP_INTERNAL_TOKEN is unset (ADR 0010). Every
# other setting can be overridden by its environment variable (SPEC §7).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/dev-services.sh"

echo "run: building the services (cargo build --workspace --bins)"
cargo build --workspace --bins --quiet
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

export PLANGREP_DEV_MODE=true
export PLANGREP_WEBHOOK_ALLOW_INSECURE="${PLANGREP_WEBHOOK_ALLOW_INSECURE:-true}"
export PLANGREP_STORAGE_URL="${PLANGREP_STORAGE_URL:-file://$ROOT/var/storage}"
if [[ -z "${PLANGREP_ADMIN_TOKEN:-}" ]]; then
    PLANGREP_ADMIN_TOKEN="dev-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
fi
export PLANGREP_ADMIN_TOKEN
GATEWAY_ADDR="${PLANGREP_GATEWAY_ADDR:-0.0.0.0:8080}"
GATEWAY_URL="http://127.0.0.1:${GATEWAY_ADDR##*:}"
GATEWAY_OPS_ADDR="${PLANGREP_GATEWAY_OPS_ADDR:-0.0.0.0:9090}"
GATEWAY_OPS_URL="http://127.0.0.1:${GATEWAY_OPS_ADDR##*:}"

pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "run: stopping the services"
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

# `serve --migrate`: the one-process dev path. Deployments run `migrate` once instead (a
# k8s Job, a one-shot compose service) and start the services without it.
"$TARGET_DIR/debug/job-orchestrator" serve --migrate & pids+=($!)
"$TARGET_DIR/debug/webhook-dispatcher" serve --migrate & pids+=($!)
"$TARGET_DIR/debug/api-gateway" serve --migrate & pids+=($!)

# Wait (bounded) for the gateway to answer /readyz; stop if a service died.
for _ in $(seq 1 120); do
    if curl -fsS "$GATEWAY_OPS_URL/readyz" >/dev/null 2>&1; then break; fi
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "run: a service exited during start-up (see its log above)" >&2; exit 1; }
    done
    sleep 0.5
done
curl -fsS "$GATEWAY_OPS_URL/readyz" >/dev/null || { echo "run: the gateway did not become ready" >&2; exit 1; }

cat <<EOF_WALKTHROUGH

Plangrep is running (dev mode).
  gateway        $GATEWAY_URL, ops $GATEWAY_OPS_URL (/healthz, /readyz, /metrics)
  orchestrator   gRPC 127.0.0.1:50051, ops http://127.0.0.1:9091 (/healthz, /readyz, /metrics)
  dispatcher     gRPC 127.0.0.1:50052, ops http://127.0.0.1:9092 (/healthz, /readyz, /metrics)
  admin token    $PLANGREP_ADMIN_TOKEN

Try it (paste into another shell; needs jq):

  export PG=$GATEWAY_URL ADMIN=$PLANGREP_ADMIN_TOKEN
  ORG=\$(curl -s -X POST \$PG/admin/v1/orgs -H "authorization: Bearer \$ADMIN" \\
        -H 'content-type: application/json' -d '{"name":"Acme"}' | jq -r .org.id)
  KEY=\$(curl -s -X POST \$PG/admin/v1/orgs/\$ORG/api-keys -H "authorization: Bearer \$ADMIN" \\
        -H 'content-type: application/json' \\
        -d '{"label":"dev","scopes":["jobs:read","jobs:write","artifacts:read"]}' | jq -r .plaintextKey)
  PROJ=\$(curl -s -X POST \$PG/api/open/v1/projects -H "authorization: Bearer \$KEY" \\
        -H 'content-type: application/json' -d '{"name":"Tower B"}' | jq -r .project.id)
  sleep 1   # the project becomes ready within a second
  curl -s -X POST \$PG/api/open/v1/projects/\$PROJ/jobs -H "authorization: Bearer \$KEY" \\
        -H 'content-type: application/json' \\
        -d '{"externalId":"PO-1138","webhookUrl":"http://127.0.0.1:9999/hook"}' | jq .

Press Ctrl-C to stop.
EOF_WALKTHROUGH

wait "${pids[@]}"
