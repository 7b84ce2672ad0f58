#!/usr/bin/env bash
# Runs the whole test suite against the local stack (Azurite, local Autopilot and Key Vault
# servers are started by the tests' own fixtures). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
