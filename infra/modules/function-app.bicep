// The Function App: Flex Consumption (Linux, Python), running as the user-assigned identity for
// everything - host storage, deployment package, exports account, Key Vault and telemetry - so no
// connection string or key is stored in app settings. HTTPS only, TLS 1.2, FTP and basic
// publishing credentials off (deployments authenticate with Entra ID).

@description('Function App name (globally unique: it is the <name>.azurewebsites.net host).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Region of the plan and the app (a region that offers Flex Consumption).')
param location string

@description('Tags for every resource; the app also gets the azd service tag.')
param tags object = {}

@description('azd service name (azure.yaml services key) the app is tagged with.')
param serviceName string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Python version of the Flex Consumption runtime.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Upper bound of instances. Throughput is bound by Autopilot\'s rate limit, not by instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Host storage account name (AzureWebJobsStorage).')
param storageAccountName string

@description('Host storage endpoints.')
param storageBlobEndpoint string
param storageQueueEndpoint string
param storageTableEndpoint string

@description('Container the Flex Consumption plan reads the deployment package from.')
param deploymentContainerName string

@description('Blob and queue endpoints of the account Customer Insights exports into (EXPORTS_STORAGE).')
param exportsBlobEndpoint string
param exportsQueueEndpoint string

@description('Application settings of segment-export (see shared/settings.py).')
param exportsContainerName string
param resultsContainerName string
param keyVaultUrl string
param autopilotBaseUrl string
param exportsConfig string
param stagedBatchSize int
param uploadConcurrency int
param batchesPerSubOrchestration int
param keyCacheSeconds int
param httpTimeoutSeconds int
param autopilotMaxRetries int

@description('Application Insights connection string (the host authenticates with the identity).')
param applicationInsightsConnectionString string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is region-dependent for Flex Consumption and a cost choice; a run interrupted by a zone outage resumes from its durable history.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Client certificates would break Event Grid's webhook deliveries to the blob trigger.
  // checkov:skip=CKV_AZURE_222: Event Grid delivers blob events to the public webhook endpoint; operators call the HTTP API from outside Azure.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero per demand; always-ready instances would cost money for a batch workload.
  // checkov:skip=CKV_AZURE_213: Health checks do not apply to Flex Consumption apps (the platform manages instances per trigger).
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [
        // Host storage, identity-based (no connection string, no key).
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storageAccountName
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storageBlobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storageQueueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storageTableEndpoint
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // The blob trigger's connection. queueServiceUri is needed too: the blob extension
        // writes poison messages to a queue in the account of the trigger's connection.
        {
          name: 'EXPORTS_STORAGE__blobServiceUri'
          value: exportsBlobEndpoint
        }
        {
          name: 'EXPORTS_STORAGE__queueServiceUri'
          value: exportsQueueEndpoint
        }
        {
          name: 'EXPORTS_STORAGE__credential'
          value: 'managedidentity'
        }
        {
          name: 'EXPORTS_STORAGE__clientId'
          value: identityClientId
        }
        // DefaultAzureCredential in the app code (Key Vault, blob clients) picks this identity.
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsightsConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        {
          name: 'EXPORTS_CONTAINER'
          value: exportsContainerName
        }
        {
          name: 'RESULTS_CONTAINER'
          value: resultsContainerName
        }
        {
          name: 'KEY_VAULT_URL'
          value: keyVaultUrl
        }
        {
          name: 'AUTOPILOT_BASE_URL'
          value: autopilotBaseUrl
        }
        {
          name: 'EXPORTS_CONFIG'
          value: exportsConfig
        }
        {
          name: 'STAGED_BATCH_SIZE'
          value: string(stagedBatchSize)
        }
        {
          name: 'UPLOAD_CONCURRENCY'
          value: string(uploadConcurrency)
        }
        {
          name: 'BATCHES_PER_SUB_ORCHESTRATION'
          value: string(batchesPerSubOrchestration)
        }
        {
          name: 'KEY_CACHE_SECONDS'
          value: string(keyCacheSeconds)
        }
        {
          name: 'HTTP_TIMEOUT_SECONDS'
          value: string(httpTimeoutSeconds)
        }
        {
          name: 'AUTOPILOT_MAX_RETRIES'
          value: string(autopilotMaxRetries)
        }
      ]
    }
  }
}

// Basic-auth publishing (FTP and the SCM site's user/password) off: azd deploys with an Entra token.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
