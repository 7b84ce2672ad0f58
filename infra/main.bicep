// segment-export on Azure: `azd up` provisions this and deploys the code; infra/README.md explains
// every parameter, the post-deploy Event Grid step, and each role assignment.
targetScope = 'subscription'

// ---- azd environment ----------------------------------------------------------------------------
@minLength(1)
@maxLength(64)
@description('azd environment name; with the subscription and region it seeds the uniqueness suffix of every name.')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers Flex Consumption). The system topic follows the exports account\'s region.')
param location string

// ---- names (empty = derived from the environment with a uniqueness suffix) ----------------------
@description('Resource group to create; empty = rg-<environmentName>.')
param resourceGroupName string = ''

@description('Function App name; empty = func-segexp-<suffix>.')
param functionAppName string = ''

@description('Host storage account name; empty = stsegexp<suffix>.')
param storageAccountName string = ''

@description('Key Vault name; empty = kv-segexp-<suffix>.')
param keyVaultName string = ''

// ---- where Customer Insights writes --------------------------------------------------------------
@description('Container Customer Insights exports into (EXPORTS_CONTAINER). Created in the host account unless exportsStorageAccountName is set, in which case it must already exist there.')
@minLength(3)
@maxLength(63)
param exportsContainerName string = 'ci-exports'

@description('Name of an EXISTING storage account Customer Insights already writes to (same subscription); empty = use a container in the app\'s own account.')
param exportsStorageAccountName string = ''

@description('Resource group of that existing account; empty = the app\'s resource group.')
param exportsStorageResourceGroupName string = ''

@description('Event Grid system topic name; empty = evgt-segexp-exports-<suffix>. An account can have only one system topic: name the existing one if the exports account already has it.')
param exportsSystemTopicName string = ''

@description('Object id of the "Dynamics 365 AI for Customer Insights" service principal in your tenant, to let it write the exports container with Entra auth; empty = grant nothing.')
param customerInsightsPrincipalId string = ''

// ---- the app -------------------------------------------------------------------------------------
@description('Container for staging, reports and scheduler state (RESULTS_CONTAINER).')
@minLength(3)
@maxLength(63)
param resultsContainerName string = 'segment-export'

@description('EXPORTS_CONFIG: path of the export configuration deployed with the app (relative to its root), blob:<container>/<path> in the host account, or inline JSON.')
param exportsConfig string = 'exports.json'

@description('Autopilot API base URL (AUTOPILOT_BASE_URL).')
param autopilotBaseUrl string = 'https://api2.autopilothq.com/v1'

@description('Key Vault secret names holding the Autopilot keys (the key_secret_name of each connection in the export configuration). Not created here: set them with az keyvault secret set.')
param autopilotSecretNames array = [
  'autopilot-api-key'
]

@description('Name of the blob-triggered function in function_app.py.')
param blobTriggerFunctionName string = 'segment_blob_trigger'

@description('STAGED_BATCH_SIZE: contacts per staged batch (one upload activity each).')
@minValue(1)
param stagedBatchSize int = 1000

@description('UPLOAD_CONCURRENCY: upload activities in flight per run.')
@minValue(1)
param uploadConcurrency int = 4

@description('BATCHES_PER_SUB_ORCHESTRATION: keeps each orchestration history small.')
@minValue(1)
param batchesPerSubOrchestration int = 100

@description('KEY_CACHE_SECONDS: how long a key read from Key Vault is reused (a 401 from Autopilot re-reads it at once).')
@minValue(0)
param keyCacheSeconds int = 600

@description('HTTP_TIMEOUT_SECONDS: per Autopilot request.')
@minValue(1)
param httpTimeoutSeconds int = 30

@description('AUTOPILOT_MAX_RETRIES: per Autopilot request (429, 5xx, timeouts).')
@minValue(0)
param autopilotMaxRetries int = 8

@description('Upper bound of Function App instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// ---- operations ----------------------------------------------------------------------------------
@description('Object id of whoever sets the Autopilot key (azd passes the signed-in principal): Key Vault Secrets Officer on the vault only. Empty = nobody.')
param operatorPrincipalId string = ''

@description('Days a deleted vault stays recoverable (and its name taken: purge protection is on).')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 7

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'segment-export'
}
var rgName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var appName = empty(functionAppName) ? 'func-segexp-${resourceToken}' : functionAppName
var hostStorageName = empty(storageAccountName) ? 'stsegexp${resourceToken}' : storageAccountName
var vaultName = empty(keyVaultName) ? 'kv-segexp-${resourceToken}' : keyVaultName
var deploymentContainerName = 'app-package-${toLower(take(appName, 32))}-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletter'
var separateExportsAccount = !empty(exportsStorageAccountName)
var exportsRgName = (separateExportsAccount && !empty(exportsStorageResourceGroupName)) ? exportsStorageResourceGroupName : rgName
var systemTopicName = empty(exportsSystemTopicName) ? 'evgt-segexp-exports-${resourceToken}' : exportsSystemTopicName

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: rgName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-segexp-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-segexp-${resourceToken}'
    applicationInsightsName: 'appi-segexp-${resourceToken}'
    location: location
    tags: tags
  }
}

module hostStorage 'modules/host-storage.bicep' = {
  name: 'host-storage'
  scope: rg
  params: {
    name: hostStorageName
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    resultsContainerName: resultsContainerName
    exportsContainerName: separateExportsAccount ? '' : exportsContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module keyVault 'modules/key-vault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: vaultName
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
    operatorPrincipalId: operatorPrincipalId
  }
}

module appAccess 'modules/app-access.bicep' = {
  name: 'app-access'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: hostStorage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

// The exports side (system topic, and the dead-letter grant of its identity) is part of this
// deployment only when the exports container is in the app's own account. For an existing account
// in another resource group, infra/hooks/postprovision.sh deploys the same module there as a
// separate deployment: azd down deletes every resource group its deployment touched, and that
// group holds the account Customer Insights writes to.
module exportsSource 'modules/exports-source.bicep' = if (!separateExportsAccount) {
  name: 'exports-source'
  scope: rg
  params: {
    storageAccountName: hostStorage.outputs.name
    containerName: exportsContainerName
    isSeparateAccount: false
    appPrincipalId: identity.outputs.principalId
    customerInsightsPrincipalId: customerInsightsPrincipalId
    systemTopicName: systemTopicName
    location: location
    deadLetterStorageAccountName: hostStorage.outputs.name
    deadLetterResourceGroupName: rgName
    deadLetterContainerName: deadLetterContainerName
    tags: tags
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  dependsOn: [
    appAccess
  ]
  params: {
    name: appName
    planName: 'plan-segexp-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'segment-export'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    maximumInstanceCount: maximumInstanceCount
    storageAccountName: hostStorage.outputs.name
    storageBlobEndpoint: hostStorage.outputs.blobEndpoint
    storageQueueEndpoint: hostStorage.outputs.queueEndpoint
    storageTableEndpoint: hostStorage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    exportsBlobEndpoint: separateExportsAccount ? 'https://${exportsStorageAccountName}.blob.${environment().suffixes.storage}/' : hostStorage.outputs.blobEndpoint
    exportsQueueEndpoint: separateExportsAccount ? 'https://${exportsStorageAccountName}.queue.${environment().suffixes.storage}/' : hostStorage.outputs.queueEndpoint
    exportsContainerName: exportsContainerName
    resultsContainerName: resultsContainerName
    keyVaultUrl: keyVault.outputs.uri
    autopilotBaseUrl: autopilotBaseUrl
    exportsConfig: exportsConfig
    stagedBatchSize: stagedBatchSize
    uploadConcurrency: uploadConcurrency
    batchesPerSubOrchestration: batchesPerSubOrchestration
    keyCacheSeconds: keyCacheSeconds
    httpTimeoutSeconds: httpTimeoutSeconds
    autopilotMaxRetries: autopilotMaxRetries
    applicationInsightsConnectionString: monitoring.outputs.connectionString
  }
}

// Read by azd (AZURE_*, SERVICE_*) and by infra/hooks/postprovision.sh and postdeploy.sh.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_SEGMENT_EXPORT_URI string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = hostStorage.outputs.name
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output AUTOPILOT_SECRET_NAMES string = join(autopilotSecretNames, ' ')
output EXPORTS_STORAGE_ACCOUNT string = separateExportsAccount ? exportsStorageAccountName : hostStorage.outputs.name
output EXPORTS_RESOURCE_GROUP string = exportsRgName
output EXPORTS_CONTAINER_NAME string = exportsContainerName
output EXPORTS_SEPARATE_ACCOUNT bool = separateExportsAccount
output EXPORTS_SYSTEM_TOPIC_NAME string = systemTopicName
output APP_PRINCIPAL_ID string = identity.outputs.principalId
output CUSTOMER_INSIGHTS_WRITER_PRINCIPAL_ID string = customerInsightsPrincipalId
output DEAD_LETTER_STORAGE_ACCOUNT_ID string = hostStorage.outputs.id
output DEAD_LETTER_STORAGE_ACCOUNT_NAME string = hostStorage.outputs.name
output DEAD_LETTER_CONTAINER_NAME string = deadLetterContainerName
output BLOB_TRIGGER_FUNCTION_NAME string = blobTriggerFunctionName
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
