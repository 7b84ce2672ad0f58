#!/usr/bin/env bash
# Static checks of the Bicep in infra/ without Azure (the Bicep CLI is not installable here):
#   1. every .bicep file parses with pycep-parser (from .venv, as the tests use it);
#   2. checkov (its own venv, .local/checkov-venv: its dependency tree is large and would clash
#      with the app's) runs the bicep framework on infra/: no failed check, no parsing error, and
#      every skipped check carries its reason in a `checkov:skip=ID: reason` comment;
#   3. the azd hooks are valid sh.
# Idempotent (checkov is installed once per version spec) and quiet when passing: one summary line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

checkov_spec="checkov>=3.3,<3.4"
venv=.local/checkov-venv
python="${PYTHON:-python3}"
log="$(mktemp)"
report="$(mktemp)"
trap 'rm -f "$log" "$report"' EXIT

if [ ! -x .venv/bin/python ]; then
  echo "infra-check: .venv is missing; run scripts/setup.sh first" >&2
  exit 1
fi

# 1. parse
parsed=$(.venv/bin/python - <<'PY'
import sys
from pathlib import Path

from pycep import BicepParser

files = sorted(Path("infra").rglob("*.bicep"))
if not files:
    sys.exit("infra-check: no .bicep files under infra/")
failed = []
for path in files:
    try:
        BicepParser().parse(file_path=path)
    except Exception as exc:  # the parser raises several unrelated types
        failed.append(f"{path}: {str(exc).splitlines()[0]}")
if failed:
    sys.exit("infra-check: Bicep parse errors:\n  " + "\n  ".join(failed))
print(len(files))
PY
)

# 2. checkov, in its own venv (recreated when the version spec changes)
stamp="$venv/.checkov-spec"
if [ ! -x "$venv/bin/checkov" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$checkov_spec" ]; then
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! { "$python" -m venv "$venv" &&
         "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$checkov_spec"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "infra-check: could not install $checkov_spec into $venv" >&2
    exit 1
  fi
  echo "$checkov_spec" > "$stamp"
fi

# --skip-download: no Prisma Cloud calls (the network reaches only package registries).
set +e
"$venv/bin/checkov" --directory infra --framework bicep --skip-download --output json >"$report" 2>"$log"
checkov_rc=$?
set -e

if ! summary=$("$venv/bin/python" - "$report" "$parsed" <<'PY'
import json
import sys

report_path, parsed = sys.argv[1], int(sys.argv[2])
with open(report_path, encoding="utf-8") as handle:
    data = json.load(handle)
reports = data if isinstance(data, list) else [data]
passed = failed = skipped = parsing_errors = 0
problems = []
for report in reports:
    summary = report.get("summary", {})
    passed += summary.get("passed", 0)
    failed += summary.get("failed", 0)
    skipped += summary.get("skipped", 0)
    parsing_errors += summary.get("parsing_errors", 0)
    results = report.get("results", {})
    for check in results.get("failed_checks", []):
        problems.append(f"FAILED {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
    for check in results.get("skipped_checks", []):
        reason = (check.get("check_result", {}).get("suppress_comment") or "").strip()
        if not reason or reason == "No comment provided":
            problems.append(f"SKIPPED WITHOUT REASON {check['check_id']} {check['resource']} ({check['file_path']})")
    for path in results.get("parsing_errors", []):
        problems.append(f"checkov could not parse {path}")
print(f"infra: {parsed} files parsed, checkov: {passed} passed, {failed} failed, {skipped} skipped")
if problems or failed or parsing_errors or passed == 0:
    print("\n".join(problems) or "checkov checked nothing", file=sys.stderr)
    sys.exit(1)
PY
); then
  echo "$summary"
  [ -s "$log" ] && cat "$log" >&2
  echo "infra-check: checkov found problems (exit code $checkov_rc)" >&2
  exit 1
fi
if [ "$checkov_rc" -ne 0 ]; then
  cat "$log" >&2
  echo "infra-check: checkov exited with $checkov_rc" >&2
  exit 1
fi

# 3. the hooks azd runs
for hook in infra/hooks/*.sh; do sh -n "$hook"; done

echo "$summary"
