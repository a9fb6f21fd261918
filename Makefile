# The single entry point: CI calls the same targets (.ci/run -> make test).
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: run test lint fmt fmt-check clippy unit services validate-deploy deny up down images bench bench-smoke help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## start PostgreSQL/RabbitMQ if needed, build and run the three services in dev mode
	@scripts/run-dev.sh

test: services lint unit bench-smoke validate-deploy ## fmt check, clippy -D warnings, every test, the benchmark's smoke run, deploy file validation

services: ## make sure PostgreSQL and RabbitMQ are up and the database exists
	@scripts/dev-services.sh

lint: fmt-check clippy ## fmt check + clippy -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The fault suite (tests/system/fault.rs) SIGKILLs services and cuts their connections:
# it runs after every other test, alone (test group `fault` in .config/nextest.toml).
FAULT_SUITE := binary(system) & test(/^fault::/)

unit: ## unit, service and system tests (nextest when installed), then the fault suite
	@# The system tests run the built binaries (the services, job-orchestrator's pdf-worker, plangrep).
	$(CARGO) build --workspace --bins --locked
	@status=0; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked --no-fail-fast -E 'not ($(FAULT_SUITE))' || status=$$?; \
		$(CARGO) nextest run --workspace --locked --no-fail-fast -E '$(FAULT_SUITE)' || status=$$?; \
	else \
		echo "cargo-nextest not installed: using cargo test"; \
		$(CARGO) test --workspace --locked --no-fail-fast -- --skip fault:: || status=$$?; \
		$(CARGO) test --locked -p plangrep-system-tests --test system -- fault:: --test-threads=1 || status=$$?; \
	fi; \
	exit $$status

validate-deploy: ## validate compose, Kubernetes and alerting files offline (fails if a validator is missing)
	@scripts/validate-deploy.sh

deny: ## licenses, banned crates and sources (cargo install cargo-deny --locked)
	@command -v cargo-deny >/dev/null 2>&1 || { echo "deny: install it with: cargo install cargo-deny --locked"; exit 1; }
	$(CARGO) deny check bans licenses sources

up: ## the whole stack in Docker (where a Docker engine exists)
	docker compose -f deploy/compose.yaml up --build

down:
	docker compose -f deploy/compose.yaml down

images: ## build the three service images
	for service in api-gateway job-orchestrator webhook-dispatcher; do \
		docker build -f deploy/docker/Dockerfile --build-arg SERVICE=$$service -t plangrep/$$service:dev . ; \
	done

bench: services ## the benchmark suite on release builds (docs/benchmarks.md), each figure beside a baseline measured in the same run
	$(CARGO) build --release --locked --workspace --bins
	$(CARGO) run --release --locked -p plangrep-bench
	$(CARGO) bench --locked -p plangrep-core --bench core
	$(CARGO) bench --locked -p plangrep-system-tests --bench lifecycle

bench-smoke: services ## the benchmark suite shrunk to seconds (debug build), so it never rots
	$(CARGO) build --locked --workspace --bins
	$(CARGO) run --locked -p plangrep-bench -- --smoke
