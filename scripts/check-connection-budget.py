#!/usr/bin/env python3
"""Checks that a rendered Kubernetes overlay fits PostgreSQL's max_connections (ADR 0014).

    kubectl kustomize deploy/k8s/overlays/prod | scripts/check-connection-budget.py - \
        --max-connections 100 --superuser-reserved 3 --headroom 4

For every Deployment: pods at most = its HorizontalPodAutoscaler's maxReplicas (or
spec.replicas without one) + the rolling update's maxSurge; connections per pod = its
PLANGREP_DATABASE_POOL_SIZE (which must be set explicitly, in the container's env or its
ConfigMap) + the connections a service opens outside its pool (PER_POD_EXTRA). Every
container of a Job (the migrations) holds one connection. The sum must be at most
max_connections - superuser_reserved_connections - headroom (operators' psql, exporters,
backups). Prints the arithmetic; exits 1 when it does not fit or a pool is not set.
"""

import argparse
import math
import sys

import yaml

POOL_SETTING = "PLANGREP_DATABASE_POOL_SIZE"

# Connections a service opens beside its pool, per pod.
PER_POD_EXTRA = {
    # The outbox relay's leadership lock lives on a dedicated session.
    "job-orchestrator": 1,
    # The gateway hears API key changes on a dedicated session (ADR 0024).
    "api-gateway": 1,
}


def fail(message):
    sys.exit(f"check-connection-budget: {message}")


def container_setting(container, configmaps, name):
    for env in container.get("env", []):
        if env["name"] == name and "value" in env:
            return env["value"]
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and name in configmaps.get(ref["name"], {}):
            return configmaps[ref["name"]][name]
    return None


def max_surge(deployment, pods):
    surge = (
        deployment["spec"]
        .get("strategy", {})
        .get("rollingUpdate", {})
        .get("maxSurge", "25%")
    )
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(pods * int(surge[:-1]) / 100)
    return int(surge)


def budget_lines(docs):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind.get("ConfigMap", [])}
    hpa_max = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
        for h in by_kind.get("HorizontalPodAutoscaler", [])
        if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }
    lines = []
    for deployment in by_kind.get("Deployment", []):
        name = deployment["metadata"]["name"]
        replicas = hpa_max.get(name, deployment["spec"].get("replicas", 1))
        pods = replicas + max_surge(deployment, replicas)
        per_pod = 0
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            pool = container_setting(container, configmaps, POOL_SETTING)
            if pool is None:
                fail(f"Deployment {name}: set {POOL_SETTING} explicitly (container {container['name']})")
            per_pod += int(pool)
        extra = PER_POD_EXTRA.get(name, 0)
        lines.append((f"{name}: ({replicas} + {max_surge(deployment, replicas)}) pods × ({per_pod} + {extra})", pods * (per_pod + extra)))
    for job in by_kind.get("Job", []):
        containers = job["spec"]["template"]["spec"]["containers"]
        lines.append((f"Job {job['metadata']['name']}: {len(containers)} containers × 1", len(containers)))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", help="rendered YAML (a path, or - for stdin)")
    parser.add_argument("--max-connections", type=int, required=True)
    parser.add_argument("--superuser-reserved", type=int, default=3)
    parser.add_argument("--headroom", type=int, default=0)
    args = parser.parse_args()
    stream = sys.stdin if args.manifests == "-" else open(args.manifests)
    docs = [d for d in yaml.safe_load_all(stream) if d]
    lines = budget_lines(docs)
    total = sum(n for _, n in lines)
    allowed = args.max_connections - args.superuser_reserved - args.headroom
    for text, n in lines:
        print(f"  {text} = {n}")
    verdict = "fits" if total <= allowed else "does NOT fit"
    print(
        f"  total {total} {verdict} max_connections {args.max_connections} - "
        f"{args.superuser_reserved} superuser reserved - {args.headroom} headroom = {allowed}"
    )
    if total > allowed:
        sys.exit(1)


if __name__ == "__main__":
    main()
