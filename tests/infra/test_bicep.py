"""Static checks of infra/ (no Azure, no Bicep CLI): the Bicep parses, sets every app setting the code
reads in Azure, creates the containers the code uses, and keeps the security baseline and the
least-privilege role assignments that infra/README.md promises.

pycep turns Bicep into JSON; identifiers and string literals both come out as plain strings, so the
checks below compare against the names used in the templates.
"""

from __future__ import annotations

import fnmatch
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared import settings
from shared.settings import REQUIRED_IN_AZURE, SETTING_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULES = INFRA / "modules"

# Settings the code reads that the Function App deliberately does not get. Each has an Azure form
# that is set instead, or matters only for the local stack.
NOT_SET_IN_AZURE = {
    # Connection-string form of the host storage; Azure uses AzureWebJobsStorage__accountName,
    # __blobServiceUri, __queueServiceUri, __tableServiceUri with the managed identity.
    settings.STORAGE_CONNECTION: "identity-based AzureWebJobsStorage__* instead",
    # Connection-string form of the exports storage; Azure uses EXPORTS_STORAGE__blobServiceUri
    # (+ __queueServiceUri, __credential, __clientId) with the managed identity.
    settings.EXPORTS_STORAGE_CONNECTION: "identity-based EXPORTS_STORAGE__* instead",
    # Only relaxed for the local HTTPS vault on 127.0.0.1; the real vault keeps the default (true).
    settings.KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: "local vault only",
}

# Built-in role definition ids (the same in every tenant) and the resource types they may be
# assigned on. Anything else, or a wider scope, is a least-privilege regression.
BUILT_IN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
EXPECTED_GRANTS = {
    ("app-access.bicep", "Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    ("app-access.bicep", "Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("app-access.bicep", "Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("app-access.bicep", "Key Vault Secrets User", "Microsoft.KeyVault/vaults"),
    ("app-access.bicep", "Monitoring Metrics Publisher", "Microsoft.Insights/components"),
    (
        "exports-source.bicep",
        "Storage Blob Data Reader",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
    ),
    (
        "exports-source.bicep",
        "Storage Queue Data Contributor",
        "Microsoft.Storage/storageAccounts/queueServices/queues",
    ),
    (
        "exports-source.bicep",
        "Storage Blob Data Contributor",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
    ),
    (
        "dead-letter-access.bicep",
        "Storage Blob Data Contributor",
        "Microsoft.Storage/storageAccounts/blobServices/containers",
    ),
    ("key-vault.bicep", "Key Vault Secrets Officer", "Microsoft.KeyVault/vaults"),
}

BICEP_FILES = sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    """Parsed once per file: pycep is the slow part of this module."""
    return BicepParser().parse(file_path=path)


def module(name: str) -> dict[str, Any]:
    return parse(MODULES / name)


def main() -> dict[str, Any]:
    return parse(INFRA / "main.bicep")


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's own properties; a conditional resource (`= if (...) {}`) nests them one level down."""
    config: dict[str, Any] = resource["config"]
    return config["config"] if "condition" in config else config


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        symbol: resource
        for symbol, resource in template.get("resources", {}).items()
        if resource["type"] == resource_type
    }


def only_resource(template: dict[str, Any], resource_type: str) -> dict[str, Any]:
    found = resources_of_type(template, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
    return body(next(iter(found.values())))


def function_app_settings() -> dict[str, Any]:
    app = only_resource(module("function-app.bicep"), "Microsoft.Web/sites")
    return {entry["name"]: entry["value"] for entry in app["properties"]["siteConfig"]["appSettings"]}


def role_assignments() -> list[tuple[str, str, dict[str, Any]]]:
    """(file name, symbol, body) of every role assignment under infra/."""
    found = []
    for path in BICEP_FILES:
        for symbol, resource in resources_of_type(
            parse(path), "Microsoft.Authorization/roleAssignments"
        ).items():
            found.append((path.name, symbol, body(resource)))
    return found


def role_guid(template: dict[str, Any], role_definition_id: Any) -> str:
    """Resolve `subscriptionResourceId('...roleDefinitions', <literal, var or var.key>)` to a GUID."""
    function = role_definition_id["function"]
    assert function["type"] == "subscription_resource_id", "roles must be subscription-level built-in roles"
    assert function["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    name = function["parameters"]["resource_name_1"]
    variables = template.get("variables", {})
    if isinstance(name, dict):
        operands = name["operator"]["operands"]
        return str(variables[operands["operand_1"]]["value"][operands["operand_2"]])
    if name in variables:
        return str(variables[name]["value"])
    return str(name)


def container_names(template: dict[str, Any]) -> set[str]:
    return {
        body(resource)["name"]
        for resource in resources_of_type(
            template, "Microsoft.Storage/storageAccounts/blobServices/containers"
        ).values()
        if not resource["existing"]
    }


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: str(path.relative_to(INFRA)))
def test_bicep_file_parses(path: Path) -> None:
    assert parse(path)


def module_calls() -> list[tuple[Path, str, Path, dict[str, Any]]]:
    """(calling file, module symbol, module file, params passed) of every `module` declaration."""
    calls = []
    for path in BICEP_FILES:
        for symbol, declaration in parse(path).get("modules", {}).items():
            config = declaration["config"]
            config = config.get("config", config) if "condition" in config else config
            calls.append(
                (path, symbol, path.parent / declaration["detail"]["path"], config.get("params", {}))
            )
    return calls


def call_id(call: tuple[Path, str, Path, dict[str, Any]]) -> str:
    return f"{call[0].name}:{call[1]}"


def hook_parameters(hook: str) -> tuple[Path, set[str]]:
    """The template a hook deploys with `az deployment group create` and the parameter names it passes."""
    text = (INFRA / "hooks" / hook).read_text(encoding="utf-8")
    template = re.search(r'--template-file "\$here/([^"]+)"', text)
    assert template is not None
    block = re.search(r"--parameters \\\n(.*?)--only-show-errors", text, re.DOTALL)
    assert block is not None
    names = set(re.findall(r"^\s+(\w+)=", block.group(1), re.MULTILINE))
    return (INFRA / "hooks" / template.group(1)).resolve(), names


def required_parameters(template: dict[str, Any]) -> set[str]:
    return {
        name
        for name, parameter in template["parameters"].items()
        if "default" not in parameter or parameter["default"] is None
    }


@pytest.mark.parametrize("call", module_calls(), ids=call_id)
def test_module_file_exists(call: tuple[Path, str, Path, dict[str, Any]]) -> None:
    assert call[2].is_file()


@pytest.mark.parametrize("call", module_calls(), ids=call_id)
def test_module_call_passes_every_required_parameter(call: tuple[Path, str, Path, dict[str, Any]]) -> None:
    assert required_parameters(parse(call[2])) <= set(call[3])


@pytest.mark.parametrize("call", module_calls(), ids=call_id)
def test_module_call_passes_only_declared_parameters(call: tuple[Path, str, Path, dict[str, Any]]) -> None:
    assert set(call[3]) <= set(parse(call[2])["parameters"])


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: str(path.relative_to(INFRA)))
def test_module_outputs_read_by_a_template_exist(path: Path) -> None:
    modules = {symbol: file for caller, symbol, file, _ in module_calls() if caller == path}
    used = set(re.findall(r"\b(\w+)\.outputs\.(\w+)", path.read_text(encoding="utf-8")))
    missing = {
        f"{symbol}.{name}" for symbol, name in used if name not in parse(modules[symbol]).get("outputs", {})
    }
    assert not missing


@pytest.mark.parametrize("hook", ["postprovision.sh", "postdeploy.sh"])
def test_hook_deployment_passes_every_required_parameter(hook: str) -> None:
    template, passed = hook_parameters(hook)
    assert required_parameters(parse(template)) <= passed


@pytest.mark.parametrize("hook", ["postprovision.sh", "postdeploy.sh"])
def test_hook_deployment_passes_only_declared_parameters(hook: str) -> None:
    template, passed = hook_parameters(hook)
    assert passed <= set(parse(template)["parameters"])


def test_function_app_sets_every_setting_the_app_reads_in_azure() -> None:
    missing = set(SETTING_NAMES) - set(NOT_SET_IN_AZURE) - set(function_app_settings())
    assert not missing


def test_settings_required_in_azure_are_not_on_the_local_only_list() -> None:
    assert not set(REQUIRED_IN_AZURE) & set(NOT_SET_IN_AZURE)


def test_local_only_list_names_only_settings_the_code_reads() -> None:
    assert set(NOT_SET_IN_AZURE) <= set(SETTING_NAMES)


def test_no_connection_string_or_instrumentation_key_in_app_settings() -> None:
    names = set(function_app_settings())
    assert not names & {"AzureWebJobsStorage", "EXPORTS_STORAGE", "APPINSIGHTS_INSTRUMENTATIONKEY"}


def test_host_storage_connection_is_identity_based() -> None:
    app_settings = function_app_settings()
    assert (
        app_settings["AzureWebJobsStorage__credential"],
        app_settings["AzureWebJobsStorage__clientId"],
    ) == (
        "managedidentity",
        "identityClientId",
    )


def test_host_storage_connection_names_every_service_the_durable_task_hub_uses() -> None:
    names = set(function_app_settings())
    assert {
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__tableServiceUri",
    } <= names


def test_blob_trigger_connection_is_identity_based_with_a_queue_for_poison_messages() -> None:
    app_settings = function_app_settings()
    assert {
        name: app_settings.get(name) for name in app_settings if name.startswith("EXPORTS_STORAGE__")
    } == {
        "EXPORTS_STORAGE__blobServiceUri": "exportsBlobEndpoint",
        "EXPORTS_STORAGE__queueServiceUri": "exportsQueueEndpoint",
        "EXPORTS_STORAGE__credential": "managedidentity",
        "EXPORTS_STORAGE__clientId": "identityClientId",
    }


def test_app_code_credential_is_the_user_assigned_identity() -> None:
    assert function_app_settings()["AZURE_CLIENT_ID"] == "identityClientId"


def test_telemetry_uses_connection_string_with_entra_auth() -> None:
    app_settings = function_app_settings()
    assert app_settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "applicationInsightsConnectionString"
    assert (
        app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
        == "ClientId=${identityClientId};Authorization=AAD"
    )


def test_application_insights_local_auth_is_disabled() -> None:
    component = only_resource(module("monitoring.bicep"), "Microsoft.Insights/components")
    assert component["properties"]["DisableLocalAuth"] is True


@pytest.mark.parametrize(
    ("parameter", "default"),
    [
        ("stagedBatchSize", Settings().staged_batch_size),
        ("uploadConcurrency", Settings().upload_concurrency),
        ("batchesPerSubOrchestration", Settings().batches_per_sub_orchestration),
        ("keyCacheSeconds", Settings().key_cache_seconds),
        ("httpTimeoutSeconds", Settings().http_timeout_seconds),
        ("autopilotMaxRetries", Settings().max_retries),
        ("autopilotBaseUrl", settings.DEFAULT_AUTOPILOT_BASE_URL),
        ("exportsConfig", Settings().exports_config),
        ("exportsContainerName", Settings().exports_container),
        ("resultsContainerName", Settings().results_container),
    ],
)
def test_parameter_default_matches_the_code_default(parameter: str, default: object) -> None:
    assert main()["parameters"][parameter]["default"] == default


def test_results_container_is_created_in_the_host_account() -> None:
    passed = main()["modules"]["hostStorage"]["config"]["params"]["resultsContainerName"]
    assert (passed, "resultsContainerName" in container_names(module("host-storage.bicep"))) == (
        "resultsContainerName",
        True,
    )


def test_exports_container_is_created_in_the_host_account_unless_another_account_is_named() -> None:
    passed = main()["modules"]["hostStorage"]["config"]["params"]["exportsContainerName"]["operator"]
    assert (passed["operands"], "exportsContainerName" in container_names(module("host-storage.bicep"))) == (
        {"condition": "separateExportsAccount", "true_value": "", "false_value": "exportsContainerName"},
        True,
    )


def test_app_settings_name_the_containers_main_creates() -> None:
    params = main()["modules"]["functionApp"]["config"]["params"]
    app_settings = function_app_settings()
    assert (params["exportsContainerName"], params["resultsContainerName"]) == (
        "exportsContainerName",
        "resultsContainerName",
    )
    assert (app_settings["EXPORTS_CONTAINER"], app_settings["RESULTS_CONTAINER"]) == (
        "exportsContainerName",
        "resultsContainerName",
    )


def test_every_role_is_an_expected_built_in_role() -> None:
    used = {
        role_guid(parse(MODULES / file), assignment["properties"]["roleDefinitionId"])
        for file, _, assignment in role_assignments()
    }
    assert used <= set(BUILT_IN_ROLES)


def test_every_role_assignment_has_an_explicit_resource_scope() -> None:
    unscoped = [
        f"{file}:{symbol}" for file, symbol, assignment in role_assignments() if "scope" not in assignment
    ]
    assert not unscoped


def test_no_role_assignment_is_scoped_to_a_subscription_or_resource_group() -> None:
    wide = []
    for file, symbol, assignment in role_assignments():
        scope = assignment.get("scope")
        scope_resource = (
            parse(MODULES / file).get("resources", {}).get(scope) if isinstance(scope, str) else None
        )
        if scope_resource is None or scope_resource["type"] in {
            "Microsoft.Resources/resourceGroups",
            "Microsoft.Resources/subscriptions",
        }:
            wide.append(f"{file}:{symbol}")
    assert not wide


def test_each_role_is_granted_on_the_narrowest_resource_type_the_service_allows() -> None:
    grants = set()
    for file, _, assignment in role_assignments():
        template = parse(MODULES / file)
        role = BUILT_IN_ROLES[role_guid(template, assignment["properties"]["roleDefinitionId"])]
        grants.add((file, role, template["resources"][assignment["scope"]]["type"]))
    assert grants == EXPECTED_GRANTS


def test_storage_requires_tls_1_2() -> None:
    account = only_resource(module("host-storage.bicep"), "Microsoft.Storage/storageAccounts")
    assert account["properties"]["minimumTlsVersion"] == "TLS1_2"


def test_storage_is_https_only() -> None:
    account = only_resource(module("host-storage.bicep"), "Microsoft.Storage/storageAccounts")
    assert account["properties"]["supportsHttpsTrafficOnly"] is True


def test_storage_shared_key_access_is_disabled() -> None:
    account = only_resource(module("host-storage.bicep"), "Microsoft.Storage/storageAccounts")
    assert account["properties"]["allowSharedKeyAccess"] is False


def test_storage_blob_public_access_is_disabled() -> None:
    account = only_resource(module("host-storage.bicep"), "Microsoft.Storage/storageAccounts")
    assert account["properties"]["allowBlobPublicAccess"] is False


def test_every_created_container_is_private() -> None:
    template = module("host-storage.bicep")
    containers = resources_of_type(template, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert {body(resource)["properties"]["publicAccess"] for resource in containers.values()} == {"None"}


def test_blob_soft_delete_is_off_where_customer_insights_exports() -> None:
    blob_service = only_resource(
        module("host-storage.bicep"), "Microsoft.Storage/storageAccounts/blobServices"
    )
    assert blob_service["properties"]["deleteRetentionPolicy"] == {"enabled": False}


def test_function_app_is_https_only() -> None:
    app = only_resource(module("function-app.bicep"), "Microsoft.Web/sites")
    assert app["properties"]["httpsOnly"] is True


def test_function_app_requires_tls_1_2() -> None:
    site_config = only_resource(module("function-app.bicep"), "Microsoft.Web/sites")["properties"][
        "siteConfig"
    ]
    assert (site_config["minTlsVersion"], site_config["scmMinTlsVersion"]) == ("1.2", "1.2")


def test_function_app_ftp_is_disabled() -> None:
    site_config = only_resource(module("function-app.bicep"), "Microsoft.Web/sites")["properties"][
        "siteConfig"
    ]
    assert site_config["ftpsState"] == "Disabled"


def test_function_app_basic_publishing_credentials_are_disabled() -> None:
    policies = resources_of_type(
        module("function-app.bicep"), "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    )
    assert {body(policy)["name"]: body(policy)["properties"]["allow"] for policy in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_function_app_runs_on_flex_consumption_with_python_3_11() -> None:
    template = module("function-app.bicep")
    plan = only_resource(template, "Microsoft.Web/serverfarms")
    runtime = only_resource(template, "Microsoft.Web/sites")["properties"]["functionAppConfig"]["runtime"]
    assert (
        plan["sku"],
        plan["properties"]["reserved"],
        runtime["name"],
        template["parameters"]["pythonVersion"]["default"],
    ) == (
        {"tier": "FlexConsumption", "name": "FC1"},
        True,
        "python",
        "3.11",
    )


def test_function_app_runs_only_as_the_user_assigned_identity() -> None:
    app = only_resource(module("function-app.bicep"), "Microsoft.Web/sites")
    assert app["identity"]["type"] == "UserAssigned"


def test_deployment_package_is_read_with_the_user_assigned_identity() -> None:
    app = only_resource(module("function-app.bicep"), "Microsoft.Web/sites")
    storage = app["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }


def test_key_vault_uses_rbac_with_soft_delete_and_purge_protection() -> None:
    vault = only_resource(module("key-vault.bicep"), "Microsoft.KeyVault/vaults")["properties"]
    assert (vault["enableRbacAuthorization"], vault["enableSoftDelete"], vault["enablePurgeProtection"]) == (
        True,
        True,
        True,
    )


def test_no_secret_value_is_created_in_bicep() -> None:
    secrets = [
        path.name
        for path in BICEP_FILES
        if resources_of_type(parse(path), "Microsoft.KeyVault/vaults/secrets")
    ]
    assert not secrets


def test_event_subscription_delivers_only_blob_created_in_the_exports_container() -> None:
    subscription = only_resource(
        module("blob-event-subscription.bicep"), "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    )
    assert subscription["properties"]["filter"] == {
        "includedEventTypes": ["Microsoft.Storage.BlobCreated"],
        "subjectBeginsWith": "/blobServices/default/containers/${containerName}/",
    }


def test_event_subscription_targets_the_blob_extension_webhook_of_the_trigger_function() -> None:
    template = module("blob-event-subscription.bicep")
    url = template["variables"]["webhookUrl"]["value"]
    assert url.startswith(
        "https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code="
    )


def test_event_subscription_key_is_the_blobs_extension_system_key() -> None:
    key = module("blob-event-subscription.bicep")["variables"]["blobsExtensionKey"]["value"]["operator"][
        "operands"
    ]
    assert (key["operand_1"]["function"]["parameters"]["resource_identifier"], key["operand_2"]) == (
        "${app.id}/host/default",
        {
            "operator": {
                "type": "property_accessor",
                "operands": {"operand_1": "systemKeys", "operand_2": "blobs_extension"},
            }
        },
    )


def test_blob_trigger_function_name_is_defined_in_function_app() -> None:
    name = main()["parameters"]["blobTriggerFunctionName"]["default"]
    assert re.search(
        rf"^(async )?def {name}\(", (ROOT / "function_app.py").read_text(encoding="utf-8"), re.MULTILINE
    )


def test_system_topic_watches_the_exports_account() -> None:
    topic = only_resource(module("exports-source.bicep"), "Microsoft.EventGrid/systemTopics")
    assert topic["properties"] == {
        "source": {
            "operator": {"type": "property_accessor", "operands": {"operand_1": "account", "operand_2": "id"}}
        },
        "topicType": "Microsoft.Storage.StorageAccounts",
    }


def test_parameters_file_sets_only_parameters_main_declares() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(parameters) <= set(main()["parameters"])


@pytest.mark.parametrize("hook", ["postprovision.sh", "postdeploy.sh"])
def test_hook_reads_only_outputs_main_provides(hook: str) -> None:
    text = (INFRA / "hooks" / hook).read_text(encoding="utf-8")
    declared = re.search(r'^needed="([^"]*)"', text, re.MULTILINE)
    assert declared is not None
    assert set(declared.group(1).replace("\\\n", " ").split()) <= set(main()["outputs"])


@pytest.mark.parametrize("hook", ["postprovision", "postdeploy"])
def test_azure_yaml_runs_each_hook_that_exists(hook: str) -> None:
    azure_yaml = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    assert (f"run: ./infra/hooks/{hook}.sh" in azure_yaml, (INFRA / "hooks" / f"{hook}.sh").is_file()) == (
        True,
        True,
    )


def test_main_deploys_nothing_into_an_existing_exports_account() -> None:
    """azd down deletes every resource group main's deployment touched: never the exports account's."""
    exports_source = main()["modules"]["exportsSource"]["config"]
    assert (exports_source["condition"], exports_source["config"]["scope"]) == (
        {"operator": {"type": "not", "operands": {"bool_value": "separateExportsAccount"}}},
        "rg",
    )


def test_every_module_of_main_deploys_into_its_own_resource_group() -> None:
    scopes = {
        symbol: (declaration["config"].get("config", declaration["config"]))["scope"]
        for symbol, declaration in main()["modules"].items()
    }
    assert set(scopes.values()) == {"rg"}


def test_azd_service_name_matches_the_function_app_tag() -> None:
    azure_yaml = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    services = re.search(r"^services:\n  ([\w-]+):", azure_yaml, re.MULTILINE)
    assert services is not None
    assert main()["modules"]["functionApp"]["config"]["params"]["serviceName"] == services.group(1)


@pytest.mark.parametrize(
    "path",
    [
        "devtools/local_runner.py",
        "tests/conftest.py",
        "benchmarks/run.py",
        "infra/main.bicep",
        "node_modules/azurite/package.json",
        ".venv/bin/python",
        ".ci/run",
        ".azure/dev/.env",
        "README.md",
    ],
)
def test_funcignore_keeps_development_files_out_of_the_package(path: str) -> None:
    assert funcignore_excludes(path)


@pytest.mark.parametrize(
    "path", ["function_app.py", "shared/settings.py", "host.json", "requirements.txt", "exports.json"]
)
def test_funcignore_keeps_what_the_app_needs(path: str) -> None:
    assert not funcignore_excludes(path)


def funcignore_excludes(path: str) -> bool:
    """Enough of gitignore matching for .funcignore's patterns: `dir/`, globs on names and on paths."""
    parts = path.split("/")
    for raw in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        if pattern.endswith("/"):
            if pattern.rstrip("/") in parts[:-1]:
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts) or fnmatch.fnmatch(path, pattern):
            return True
    return False


def test_staging_left_by_failed_runs_is_swept_and_reports_are_kept() -> None:
    policy = only_resource(
        module("host-storage.bicep"), "Microsoft.Storage/storageAccounts/managementPolicies"
    )
    [rule] = policy["properties"]["policy"]["rules"]
    definition = rule["definition"]
    prefixes = [str(p) for p in definition["filters"]["prefixMatch"]]
    assert len(prefixes) == 1
    assert "/staging/" in prefixes[0]
    assert "runs/" not in prefixes[0]
    assert definition["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"] >= 7
