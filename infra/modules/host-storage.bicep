// The app's own storage account: Functions host state (keys, timers, blob receipts), the durable
// task hub (queues, tables, lease blobs), the deployment package, staging and reports - and, unless
// an existing account is named for it, the container Customer Insights exports into.
// Keyless: every client (host, durable extension, app code, Flex deployment) uses the managed
// identity, so shared-key access is off.

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the account.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Replication. LRS is enough: everything here can be rebuilt from the exports and Autopilot.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_LRS'

@description('Container the Flex Consumption plan deploys the app package to.')
param deploymentContainerName string

@description('Container for staging and reports (RESULTS_CONTAINER).')
param resultsContainerName string

@description('Container Customer Insights writes to; empty when the exports live in another account.')
param exportsContainerName string = ''

@description('Container Event Grid writes undeliverable blob events to.')
param deadLetterContainerName string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Customer Insights writes the exports from Microsoft's network and Event Grid / Flex Consumption reach the account over public endpoints; no VNet integration in this deployment (access is Entra-only, shared keys are off).
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: the account must be reachable publicly; data access needs an Entra token with a data role.
  // checkov:skip=CKV_AZURE_206: Replication is a parameter (skuName); LRS is the default because every blob here is derived and can be rebuilt.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    dnsEndpointType: 'Standard'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Customer Insights' blob export fails when blob soft delete is on (see specs/ci-blob-export.md).
    deleteRetentionPolicy: {
      enabled: false
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource resultsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: resultsContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Staged batches are deleted when a run completes; what a failed or cancelled run leaves under
// staging/ (and every run's reject parts) is swept after two weeks. Reports under runs/ are kept.
resource stagingCleanup 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'delete-staging-after-14-days'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${resultsContainerName}/staging/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: 14
                }
              }
            }
          }
        }
      ]
    }
  }
}

resource exportsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (!empty(exportsContainerName)) {
  parent: blobService
  name: exportsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
