#!/usr/bin/env bash
# Validate the deployment files offline (no Docker engine, no cluster needed):
#
#   - deploy/compose.yaml against the Compose Specification schema (check-jsonschema);
#   - deploy/k8s/base and every overlay: rendered with kustomize, checked against the
#     Kubernetes OpenAPI schemas in strict mode (kubernetes-validate), for the oldest and the
#     newest Kubernetes version we target, plus "every object lands in one namespace";
#   - the prod overlay's PostgreSQL connection budget: every pool at the HPA maxima plus
#     the rolling-update surge fits max_connections (scripts/check-connection-budget.py);
#   - deploy/observability: the alert rules (`promtool check rules`, and their unit tests with
#     `promtool test rules`), the Prometheus config, and the Grafana dashboard's JSON.
#
# A missing validator is an error, never a skip: the Python tools and (on Debian, as root)
# promtool are installed on first use; anything that cannot be installed stops the script
# with what to install.
#
# The Python tools live in a venv under ${XDG_CACHE_HOME:-~/.cache}/plangrep-venv, installed
# from PyPI on first use; everything after that works offline. Needs python3 and kubectl (or
# kustomize); promtool comes from Debian's `prometheus` package.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly VENV="${XDG_CACHE_HOME:-$HOME/.cache}/plangrep-venv"
# Oldest and newest Kubernetes versions the manifests must validate against.
readonly KUBE_VERSIONS="${KUBE_VERSIONS:-1.30.0 1.37.0}"
readonly NAMESPACE="plangrep"

die() { printf 'validate-deploy: %s\n' "$*" >&2; exit 1; }

ensure_tools() {
    if [[ -x "$VENV/bin/check-jsonschema" && -x "$VENV/bin/kubernetes-validate" ]]; then
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 is required (to install check-jsonschema and kubernetes-validate)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" || die "cannot create a venv at $VENV (on Debian: apt-get install python3-venv)"
    fi
    echo "validate-deploy: installing check-jsonschema and kubernetes-validate into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        'check-jsonschema>=0.29' 'kubernetes-validate>=1.37' \
        || die "pip install from PyPI failed"
}

ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    local sudo=()
    if ((EUID != 0)); then
        sudo -n true 2>/dev/null || die "promtool is required: apt-get install prometheus (Debian), or put Prometheus' promtool on PATH"
        sudo=(sudo -n)
    fi
    command -v apt-get >/dev/null 2>&1 || die "promtool is required: install Prometheus' promtool and put it on PATH"
    echo "validate-deploy: installing promtool (Debian package prometheus)"
    "${sudo[@]}" apt-get install -y --no-install-recommends prometheus >/dev/null \
        || die "apt-get install prometheus failed (promtool is required)"
    command -v promtool >/dev/null 2>&1 || die "the prometheus package did not provide promtool"
}

ensure_kustomize() {
    command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1 \
        || die "kubectl (with kustomize) or kustomize is required: install kubectl (https://kubernetes.io/docs/tasks/tools/)"
}

# render DIR: print the kustomize build of DIR.
render() {
    if command -v kubectl >/dev/null 2>&1; then
        kubectl kustomize "$1"
    elif command -v kustomize >/dev/null 2>&1; then
        kustomize build "$1"
    else
        die "kubectl (with kustomize) or kustomize is required"
    fi
}

# Every object but the Namespace itself must carry metadata.namespace=$NAMESPACE. Prints the
# number of objects.
check_namespaces() {
    "$VENV/bin/python" - "$1" "$NAMESPACE" <<'PY'
import sys, yaml
path, namespace = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
bad = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
       if d["kind"] != "Namespace" and d["metadata"].get("namespace") != namespace]
if bad:
    sys.exit(f"not in namespace {namespace}: {', '.join(bad)}")
print(len(docs))
PY
}

ensure_tools
ensure_kustomize
ensure_promtool
cd "$ROOT"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. Compose.
if ! "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml >"$work/compose.out" 2>&1; then
    cat "$work/compose.out" >&2
    die "deploy/compose.yaml does not match the Compose Specification"
fi

# 2. Kubernetes: the base and every overlay.
summary=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir="${dir%/}"
    name="${dir#deploy/k8s/}"
    render "$dir" >"$work/render.yaml" 2>"$work/render.err" || {
        cat "$work/render.err" >&2
        die "kustomize could not render $dir"
    }
    count="$(check_namespaces "$work/render.yaml")" || die "$dir: objects outside namespace $NAMESPACE"
    for version in $KUBE_VERSIONS; do
        rc=0
        "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" - \
            <"$work/render.yaml" >"$work/validate.out" 2>&1 || rc=$?
        # kubernetes-validate exits 0 on WARN (e.g. a kind it has no schema for): fail on it too.
        if ((rc != 0)) || grep -qE '^(WARN|ERROR|FATAL)|Traceback' "$work/validate.out"; then
            cat "$work/validate.out" >&2
            die "$dir does not validate against Kubernetes $version"
        fi
    done
    summary+=("$name ($count objects)")
done

# 2b. The prod overlay's PostgreSQL connection budget (ADR 0014): PostgreSQL's default
# max_connections = 100, 3 superuser-reserved slots, 4 for operators (psql, exporters).
render deploy/k8s/overlays/prod >"$work/prod.yaml" 2>"$work/render.err" \
    || { cat "$work/render.err" >&2; die "kustomize could not render deploy/k8s/overlays/prod"; }
"$VENV/bin/python" scripts/check-connection-budget.py "$work/prod.yaml" \
    --max-connections 100 --superuser-reserved 3 --headroom 4 >"$work/budget.out" 2>&1 \
    || { cat "$work/budget.out" >&2; die "deploy/k8s/overlays/prod does not fit PostgreSQL's max_connections"; }
budget="$(tail -n 1 "$work/budget.out" | sed 's/^ *//')"
# The check must be able to fail: a server with a single connection cannot hold the overlay.
if "$VENV/bin/python" scripts/check-connection-budget.py "$work/prod.yaml" --max-connections 1 >/dev/null 2>&1; then
    die "scripts/check-connection-budget.py accepted a budget of one connection"
fi

# 3. Observability: alert rules (syntax and unit tests), Prometheus config, dashboard JSON.
# Which metric names they may use is checked against real scrapes by the system test
# observability::the_alert_rules_and_dashboard_only_read_metrics_the_services_export.
obs=deploy/observability
promtool check rules "$obs/alerts.yaml" >"$work/promtool.out" 2>&1 \
    || { cat "$work/promtool.out" >&2; die "$obs/alerts.yaml: promtool check rules failed"; }
(cd "$obs" && promtool test rules alerts.test.yaml) >"$work/promtool.out" 2>&1 \
    || { cat "$work/promtool.out" >&2; die "$obs/alerts.test.yaml: the alert rules' unit tests failed"; }
promtool check config "$obs/prometheus.yml" >"$work/promtool.out" 2>&1 \
    || { cat "$work/promtool.out" >&2; die "$obs/prometheus.yml: promtool check config failed"; }
"$VENV/bin/python" - "$obs/dashboard.json" <<'PY' || die "$obs/dashboard.json is not a valid dashboard"
import json, sys
dashboard = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
if not exprs or not all("plangrep_" in e for e in exprs):
    sys.exit("every panel target must query a plangrep_ metric")
PY

joined="$(printf '%s, ' "${summary[@]}")"
printf 'validate-deploy: ok: compose schema; kubernetes %s strict: %s; prod connection budget: %s; alert rules, their tests, prometheus.yml and dashboard.json\n' \
    "${KUBE_VERSIONS// /+}" "${joined%, }" "$budget"
