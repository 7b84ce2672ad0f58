# Shared by the azd hooks (sourced, POSIX sh).

# azd passes its environment to hooks; when a hook is run by hand, read the named values from
# `azd env get-values` instead. Values are not echoed.
load_azd_env() {
  [ -z "${AZURE_RESOURCE_GROUP:-}" ] || return 0
  command -v azd >/dev/null 2>&1 || return 0
  env_file=$(mktemp)
  azd env get-values > "$env_file" || { rm -f "$env_file"; return 0; }
  for name in "$@"; do
    line=$(grep "^$name=" "$env_file" || true)
    [ -n "$line" ] || continue
    value=${line#*=}
    value=${value#\"}
    value=${value%\"}
    export "$name=$value"
  done
  rm -f "$env_file"
}

# Fails with a hint when one of the named values is empty.
require_vars() {
  for name in "$@"; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
      echo "${hook_name:-hook}: $name is not set in the azd environment; run 'azd provision' first" >&2
      exit 1
    fi
  done
  command -v az >/dev/null 2>&1 || { echo "${hook_name:-hook}: the Azure CLI (az) is required" >&2; exit 1; }
}
