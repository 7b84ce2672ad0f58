// The account Customer Insights exports into, seen from Event Grid and from the app:
// - the Event Grid system topic on that account (the blob trigger's event source; its
//   subscription is blob-event-subscription.bicep, created once the code is deployed), and the
//   topic identity's right to write undeliverable events to the dead-letter container;
// - when it is a separate, existing account: the app's read access to the exports container and
//   the blob trigger's poison queue (the blob extension writes a message to
//   `webjobs-blobtrigger-poison` in the trigger connection's account after 5 failed attempts, so
//   Storage Queue Data Contributor is needed there - on that one queue only);
// - optionally, Customer Insights' own service principal as writer of the exports container.
// Deployed into the resource group of that account: by main.bicep when it is the app's own account,
// by infra/hooks/postprovision.sh (a deployment azd does not track) when it is an existing one.

@description('Name of the storage account Customer Insights writes to.')
param storageAccountName string

@description('Container Customer Insights writes to (must exist when the account is a separate one).')
param containerName string

@description('True when the account is not the app\'s host account: the app then needs its own read access here.')
param isSeparateAccount bool

@description('Principal (object) id of the app\'s user-assigned identity.')
param appPrincipalId string

@description('Object id of the "Dynamics 365 AI for Customer Insights" service principal in your tenant (Storage Blob Data Contributor on the exports container); empty grants nothing.')
param customerInsightsPrincipalId string = ''

@description('Name of the Event Grid system topic created on the account.')
param systemTopicName string

@description('Region of the account: a system topic lives in its source\'s region.')
param location string

@description('Host storage account holding the dead-letter container.')
param deadLetterStorageAccountName string

@description('Resource group of that account (the app\'s).')
param deadLetterResourceGroupName string

@description('Container Event Grid writes undeliverable events to.')
param deadLetterContainerName string

@description('Tags for every resource.')
param tags object = {}

var poisonQueueName = 'webjobs-blobtrigger-poison'

var roles = {
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: containerName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

// Created here so that the queue role below can be scoped to it (a role cannot be assigned on a
// queue that does not exist yet). In the host account the host creates it itself.
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = if (isSeparateAccount) {
  parent: queueService
  name: poisonQueueName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource appExportsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isSeparateAccount) {
  name: guid(container.id, appPrincipalId, roles.storageBlobDataReader)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appPoisonQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (isSeparateAccount) {
  name: guid(account.id, poisonQueueName, appPrincipalId, roles.storageQueueDataContributor)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource customerInsightsWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(customerInsightsPrincipalId)) {
  name: guid(container.id, customerInsightsPrincipalId, roles.storageBlobDataContributor)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: customerInsightsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

module deadLetterAccess 'dead-letter-access.bicep' = {
  name: 'dead-letter-access'
  scope: resourceGroup(deadLetterResourceGroupName)
  params: {
    storageAccountName: deadLetterStorageAccountName
    containerName: deadLetterContainerName
    systemTopicPrincipalId: systemTopic.identity.principalId
  }
}

output systemTopicName string = systemTopic.name
