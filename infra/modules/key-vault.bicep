// The vault holding each Autopilot connection's API key. RBAC mode (no access policies), soft
// delete and purge protection on. No secret is created here: a secret value in a template ends up
// in deployment history, so the key is set by hand (`az keyvault secret set`, see infra/README.md).

@description('Vault name (3-24 letters, digits and hyphens, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the vault.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Days a deleted vault or secret can be recovered. With purge protection the vault name stays taken this long after `azd down`.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 7

@description('Object id of the person or pipeline that sets the Autopilot key (Key Vault Secrets Officer on this vault only); empty grants nobody.')
param operatorPrincipalId string = ''

var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: The Flex Consumption app reaches the vault over its public endpoint (no VNet integration in this deployment) and Functions are not a trusted service for the vault firewall; access needs an Entra token with an RBAC role.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Lets the operator run `az keyvault secret set` right after `azd up`. Scoped to this vault.
resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: operatorPrincipalId
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
