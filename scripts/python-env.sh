#!/usr/bin/env bash
# Prints the path of a Python interpreter that has the test-only Python packages
# (`standardwebhooks`, an independent verifier of our webhook signatures; `schemathesis`,
# which fuzzes the gateway against its OpenAPI document; `openapi-spec-validator`, a strict
# OpenAPI 3.1 validator of that document, whose `jsonschema` also checks live responses
# against it; `pypdf`, an independent reader that cross-checks the PDF fixtures), creating the venv under
# ${XDG_CACHE_HOME:-~/.cache}/plangrep-venv from PyPI on first use.
set -euo pipefail

readonly VENV="${XDG_CACHE_HOME:-$HOME/.cache}/plangrep-venv"
die() { printf 'python-env: %s\n' "$*" >&2; exit 1; }

ready() { "$VENV/bin/python" -c 'import standardwebhooks, schemathesis, pypdf, openapi_spec_validator, jsonschema, requests' >/dev/null 2>&1; }

if ! ready && command -v flock >/dev/null 2>&1; then
    # Tests run in parallel: the first to get here installs, the others wait for it
    # instead of using a half-made venv (util-linux's flock; without it, as before).
    mkdir -p "$(dirname "$VENV")"
    exec 9>"$VENV.lock"
    flock 9
fi
if ! ready; then
    command -v python3 >/dev/null 2>&1 || die "python3 is required (apt-get install python3 python3-venv)"
    if [[ ! -x "$VENV/bin/python" ]]; then
        python3 -m venv "$VENV" >&2 || die "cannot create a venv at $VENV (apt-get install python3-venv)"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'standardwebhooks==1.1.0' 'schemathesis==4.32.*' 'pypdf==7.1.*' 'openapi-spec-validator==0.7.*' >&2 \
        || die "pip install standardwebhooks schemathesis pypdf openapi-spec-validator failed"
fi
echo "$VENV/bin/python"
