#!/bin/sh
# azd postdeploy hook: connects BlobCreated events of the exports container to the blob trigger.
#
# The Event Grid subscription's webhook URL carries the Functions host's `blobs_extension` system
# key, which exists only once the deployed code (declaring an Event Grid blob trigger) has started,
# so `azd provision` cannot create it. This hook waits for the key, then deploys
# infra/modules/blob-event-subscription.bicep (the template reads the key itself: it never appears
# on a command line, in a log or in the azd environment). It runs after every `azd deploy`, so the
# subscription always carries the current key. Idempotent: a re-run updates the subscription in
# place. Needs the Azure CLI, signed in.
set -eu

hook_name=postdeploy
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

needed="AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME SERVICE_SEGMENT_EXPORT_URI EXPORTS_RESOURCE_GROUP \
EXPORTS_SYSTEM_TOPIC_NAME EXPORTS_CONTAINER_NAME DEAD_LETTER_STORAGE_ACCOUNT_ID DEAD_LETTER_CONTAINER_NAME \
BLOB_TRIGGER_FUNCTION_NAME KEY_VAULT_NAME AUTOPILOT_SECRET_NAMES"
# shellcheck disable=SC2086
load_azd_env $needed
# shellcheck disable=SC2086
require_vars $needed
attempts=${BLOB_KEY_WAIT_ATTEMPTS:-30}

echo "postdeploy: waiting for the blobs_extension key of $AZURE_FUNCTION_APP_NAME"
tries=0
while :; do
  # Asks only whether the key exists; its value is never printed.
  present=$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
    --query 'systemKeys.blobs_extension != `null`' --output tsv 2>/dev/null || echo false)
  [ "$present" = "true" ] && break
  tries=$((tries + 1))
  if [ "$tries" -ge "$attempts" ]; then
    echo "postdeploy: no blobs_extension key after $attempts tries. Check that function '$BLOB_TRIGGER_FUNCTION_NAME'" \
      "is listed by 'az functionapp function list -g $AZURE_RESOURCE_GROUP -n $AZURE_FUNCTION_APP_NAME'" \
      "and look for host start-up errors in Application Insights, then run this hook again:" \
      "sh infra/hooks/postdeploy.sh" >&2
    exit 1
  fi
  # A request starts the host of a scaled-to-zero Flex app; indexing the trigger creates the key.
  curl --silent --output /dev/null --max-time 30 "$SERVICE_SEGMENT_EXPORT_URI/" || true
  sleep 10
done

echo "postdeploy: creating Event Grid subscription on $EXPORTS_SYSTEM_TOPIC_NAME (container $EXPORTS_CONTAINER_NAME)"
az deployment group create \
  --resource-group "$EXPORTS_RESOURCE_GROUP" \
  --name segment-blob-event-subscription \
  --template-file "$here/../modules/blob-event-subscription.bicep" \
  --parameters \
    systemTopicName="$EXPORTS_SYSTEM_TOPIC_NAME" \
    functionAppName="$AZURE_FUNCTION_APP_NAME" \
    functionAppResourceGroupName="$AZURE_RESOURCE_GROUP" \
    containerName="$EXPORTS_CONTAINER_NAME" \
    functionName="$BLOB_TRIGGER_FUNCTION_NAME" \
    deadLetterStorageAccountId="$DEAD_LETTER_STORAGE_ACCOUNT_ID" \
    deadLetterContainerName="$DEAD_LETTER_CONTAINER_NAME" \
  --only-show-errors --output none

# Lists secret names only (no values). Fails quietly when the signed-in user has no data-plane role.
existing=$(az keyvault secret list --vault-name "$KEY_VAULT_NAME" --query "[].name" --output tsv 2>/dev/null || echo "")
for secret in $AUTOPILOT_SECRET_NAMES; do
  if ! printf '%s\n' "$existing" | grep -qx "$secret"; then
    echo "postdeploy: Key Vault secret '$secret' is not set (or not visible to you). Set the Autopilot key:"
    echo "  read -rs AUTOPILOT_KEY && az keyvault secret set --vault-name $KEY_VAULT_NAME --name $secret --value \"\$AUTOPILOT_KEY\" --output none; unset AUTOPILOT_KEY"
  fi
done
echo "postdeploy: done. Point Customer Insights' blob export at container '$EXPORTS_CONTAINER_NAME' (infra/README.md)."
