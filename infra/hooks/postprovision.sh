#!/bin/sh
# azd postprovision hook. Does nothing when the exports container is in the app's own account
# (main.bicep then deploys the exports side itself). When Customer Insights writes to an EXISTING
# account (EXISTING_EXPORTS_STORAGE_ACCOUNT), deploys infra/modules/exports-source.bicep into that
# account's resource group: the Event Grid system topic, the app's read access to the exports
# container, the blob trigger's poison queue and the app's role on it, the dead-letter grant of the
# topic's identity and, if CUSTOMER_INSIGHTS_PRINCIPAL_ID is set, Customer Insights' writer role.
# It is a separate deployment on purpose: `azd down` deletes every resource group that its own
# deployment touched, and this one holds your exports account. Idempotent.
set -eu
hook_name=postprovision
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

needed="AZURE_RESOURCE_GROUP EXPORTS_SEPARATE_ACCOUNT EXPORTS_STORAGE_ACCOUNT EXPORTS_RESOURCE_GROUP \
EXPORTS_CONTAINER_NAME EXPORTS_SYSTEM_TOPIC_NAME APP_PRINCIPAL_ID DEAD_LETTER_STORAGE_ACCOUNT_NAME \
DEAD_LETTER_CONTAINER_NAME"
# shellcheck disable=SC2086
load_azd_env $needed CUSTOMER_INSIGHTS_WRITER_PRINCIPAL_ID
[ "${EXPORTS_SEPARATE_ACCOUNT:-false}" = "true" ] || exit 0
# shellcheck disable=SC2086
require_vars $needed

if ! az storage container-rm show --resource-group "$EXPORTS_RESOURCE_GROUP" \
    --storage-account "$EXPORTS_STORAGE_ACCOUNT" --name "$EXPORTS_CONTAINER_NAME" --output none 2>/dev/null; then
  echo "postprovision: container '$EXPORTS_CONTAINER_NAME' not found in storage account '$EXPORTS_STORAGE_ACCOUNT'" \
    "(resource group '$EXPORTS_RESOURCE_GROUP'). Create it, or fix EXISTING_EXPORTS_STORAGE_ACCOUNT /" \
    "EXISTING_EXPORTS_RESOURCE_GROUP / CI_EXPORTS_CONTAINER, then run 'azd provision' again." >&2
  exit 1
fi
location=$(az storage account show --resource-group "$EXPORTS_RESOURCE_GROUP" --name "$EXPORTS_STORAGE_ACCOUNT" \
  --query location --output tsv)

echo "postprovision: exports side in $EXPORTS_RESOURCE_GROUP/$EXPORTS_STORAGE_ACCOUNT (container $EXPORTS_CONTAINER_NAME)"
az deployment group create \
  --resource-group "$EXPORTS_RESOURCE_GROUP" \
  --name segment-exports-source \
  --template-file "$here/../modules/exports-source.bicep" \
  --parameters \
    storageAccountName="$EXPORTS_STORAGE_ACCOUNT" \
    containerName="$EXPORTS_CONTAINER_NAME" \
    isSeparateAccount=true \
    appPrincipalId="$APP_PRINCIPAL_ID" \
    customerInsightsPrincipalId="${CUSTOMER_INSIGHTS_WRITER_PRINCIPAL_ID:-}" \
    systemTopicName="$EXPORTS_SYSTEM_TOPIC_NAME" \
    location="$location" \
    deadLetterStorageAccountName="$DEAD_LETTER_STORAGE_ACCOUNT_NAME" \
    deadLetterResourceGroupName="$AZURE_RESOURCE_GROUP" \
    deadLetterContainerName="$DEAD_LETTER_CONTAINER_NAME" \
    tags='{"application": "segment-export"}' \
  --only-show-errors --output none
