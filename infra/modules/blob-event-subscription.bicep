// The Event Grid subscription that feeds the blob trigger (`source=EVENT_GRID`, the only blob
// trigger Flex Consumption accepts). Its webhook URL carries the `blobs_extension` system key,
// which the Functions host creates only when code declaring an Event Grid blob trigger runs - so
// this cannot be part of provisioning. infra/hooks/postdeploy.sh deploys this file after every
// `azd deploy` (so the URL always carries the current key), into the resource group of the exports
// account, where the system topic is.

@description('Event Grid system topic on the exports account.')
param systemTopicName string

@description('Function App name.')
param functionAppName string

@description('Resource group of the Function App.')
param functionAppResourceGroupName string

@description('Exports container: only blobs created in it are delivered.')
param containerName string

@description('Name of the blob-triggered function (function_app.py).')
param functionName string = 'segment_blob_trigger'

@description('Resource id of the storage account holding the dead-letter container.')
param deadLetterStorageAccountId string

@description('Container undeliverable events are written to.')
param deadLetterContainerName string

@description('Name of the event subscription.')
param subscriptionName string = 'segment-blob-trigger'

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
  scope: resourceGroup(functionAppResourceGroupName)
}

// Read at deployment time, never passed through a parameter or the shell.
var blobsExtensionKey = listKeys('${app.id}/host/default', '2024-04-01').systemKeys.blobs_extension
var webhookUrl = 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: webhookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${containerName}/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output name string = blobCreated.name
