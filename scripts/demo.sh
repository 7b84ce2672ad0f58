#!/usr/bin/env bash
# The README's first command: set everything up (venv, requirements, Azurite), then run a real
# export of a generated 50,000-profile Customer Insights segment through the local stack.
# Extra arguments go to `python -m devtools.demo` (try --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/python -m devtools.demo "$@"
