"""The export configuration: the documented example loads, and every mistake is named precisely."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.config import (
    STANDARD_FIELDS,
    ConfigError,
    ExportsConfig,
    FieldMapping,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "exports.json"


def base() -> dict[str, Any]:
    return {
        "connections": {"main": {"display_name": "Main", "key_secret_name": "autopilot-key"}},
        "exports": [
            {
                "name": "HighValue",
                "connection": "main",
                "folder": "/CustomerInsights_abcd/BlobExport/",
                "segments": [{"name": "HighValueSegment", "list_title": "High value"}],
                "email_column": "EmailAddress",
                "fields": [{"column": "City", "field": "MailingCity"}],
            }
        ],
    }


def error_for(data: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="exports.json")
    return info.value


def with_export(**changes: Any) -> dict[str, Any]:
    data = base()
    export = data["exports"][0]
    for key, value in changes.items():
        if value is ...:
            export.pop(key, None)
        else:
            export[key] = value
    return data


# ------------------------------------------------------------------------------------ happy path


def test_example_configuration_loads_with_every_export_and_connection() -> None:
    config = load_config(str(EXAMPLE))
    assert set(config.connections) == {"main", "emea"}
    assert set(config.exports) == {"HighValue", "Newsletter-EMEA"}
    high_value = config.export("HighValue")
    assert config.connection_for(high_value).key_secret_name == "autopilot-api-key"
    assert high_value.export_on_arrival is True
    assert config.export("Newsletter-EMEA").schedule == "30 5 * * 1-5"


def test_example_custom_fields_get_autopilot_keys_with_spaces_as_double_dashes() -> None:
    fields = load_config(str(EXAMPLE)).export("HighValue").fields
    assert FieldMapping("LoyaltyTier", "string--Loyalty--Tier", "string") in fields
    assert FieldMapping("City", "MailingCity", None) in fields
    assert [f.is_custom for f in fields[:2]] == [False, False]


def test_defaults_apply_for_optional_keys() -> None:
    config = parse_config(base(), source="exports.json")
    export = config.export("HighValue")
    assert export.folder == "CustomerInsights_abcd/BlobExport"
    assert export.first_name_column is None
    assert export.schedule is None
    assert export.export_on_arrival is True
    assert config.connections["main"].requests_per_second == 5.0


def test_list_title_defaults_to_the_segment_name() -> None:
    data = with_export(segments=[{"name": "Lapsed"}])
    segment = parse_config(data, source="x").export("HighValue").segments[0]
    assert segment.list_title == "Lapsed"


def test_segment_lookup_ignores_case() -> None:
    export = parse_config(base(), source="x").export("HighValue")
    segment = export.segment("highvaluesegment")
    assert segment is not None
    assert segment.name == "HighValueSegment"
    assert export.segment("Other") is None


def test_unknown_export_lookup_names_the_configured_exports() -> None:
    config = parse_config(base(), source="x")
    with pytest.raises(KeyError, match="unknown export 'Nope' \\(configured: HighValue\\)"):
        config.export("Nope")


def test_export_lookup_falls_back_to_case_insensitive() -> None:
    assert parse_config(base(), source="x").export("highvalue").name == "HighValue"


def test_configuration_is_read_only() -> None:
    config = parse_config(base(), source="x")
    with pytest.raises(TypeError):
        config.exports["x"] = config.exports["HighValue"]  # type: ignore[index]


def test_comments_are_allowed_in_every_object() -> None:
    data = base()
    data["$comment"] = "top"
    data["connections"]["main"]["$comment"] = "connection"
    data["exports"][0]["$comment"] = "export"
    data["exports"][0]["segments"][0]["$comment"] = "segment"
    data["exports"][0]["fields"][0]["$comment"] = "field"
    assert isinstance(parse_config(data, source="x"), ExportsConfig)


def test_inline_json_is_accepted() -> None:
    config = load_config(json.dumps(base()))
    assert "HighValue" in config.exports


def test_blob_location_is_read_through_the_given_reader() -> None:
    blobs = {("config", "prod/exports.json"): json.dumps(base()).encode()}
    config = load_config("blob:config/prod/exports.json", read_blob=lambda c, n: blobs[(c, n)])
    assert "HighValue" in config.exports


def test_blob_location_without_a_reader_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"blob:config/exports\.json"):
        load_config("blob:config/exports.json")


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "nope.json"))


def test_standard_fields_include_unsubscribed() -> None:
    assert "unsubscribed" in STANDARD_FIELDS
    assert "MailingPostalCode" in STANDARD_FIELDS


# ----------------------------------------------------------------------------------------- errors


def test_unknown_connection_message_names_export_field_and_known_connections() -> None:
    error = error_for(with_export(connection="mian"))
    assert str(error) == (
        "exports config 'exports.json': export 'HighValue': field 'connection': unknown connection 'mian'; "
        "did you mean 'main'? (known: main)"
    )
    assert (error.export, error.field) == ("HighValue", "connection")


def test_typo_in_an_export_key_is_rejected_with_a_suggestion() -> None:
    error = error_for(with_export(shedule="0 6 * * *"))
    assert (error.export, error.field) == ("HighValue", "shedule")
    assert "did you mean 'schedule'?" in str(error)


def test_typo_in_a_top_level_key_is_rejected() -> None:
    data = base()
    data["exprots"] = []
    error = error_for(data)
    assert error.field == "exprots"
    assert "did you mean 'exports'?" in str(error)


@pytest.mark.parametrize("key", ["name", "connection", "folder", "segments", "email_column"])
def test_required_export_keys(key: str) -> None:
    error = error_for(with_export(**{key: ...}))
    assert error.field == key
    assert "required" in str(error)


def test_missing_export_name_is_reported_by_position() -> None:
    error = error_for(with_export(name=...))
    assert error.export == "exports[0]"


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"email_column": 5}, "email_column", "must be a string, got a number"),
        ({"email_column": "  "}, "email_column", "must not be empty"),
        ({"export_on_arrival": "yes"}, "export_on_arrival", "must be true or false"),
        ({"segments": "HighValueSegment"}, "segments", "list"),
        ({"segments": []}, "segments", "at least one segment"),
        ({"fields": {"City": "MailingCity"}}, "fields", "must be a list"),
        ({"folder": "a//b"}, "folder", "not a blob folder path"),
        ({"folder": "x/model.json"}, "folder", "names a file"),
    ],
)
def test_wrong_types_and_values_name_the_field(change: dict[str, Any], field: str, fragment: str) -> None:
    error = error_for(with_export(**change))
    assert (error.export, error.field) == ("HighValue", field)
    assert fragment in str(error)


def test_export_name_must_be_usable_in_ids() -> None:
    error = error_for(with_export(name="High Value"))
    assert (error.export, error.field) == ("High Value", "name")
    assert "letters, digits, '-' and '_'" in str(error)


def test_requests_per_second_must_be_positive() -> None:
    data = base()
    data["connections"]["main"]["requests_per_second"] = 0
    error = error_for(data)
    assert (error.connection, error.field, error.export) == ("main", "requests_per_second", None)
    assert "connection 'main'" in str(error)
    assert "greater than 0" in str(error)


def test_requests_per_second_must_be_a_number() -> None:
    data = base()
    data["connections"]["main"]["requests_per_second"] = "5"
    assert "must be a number" in str(error_for(data))


def test_key_vault_secret_name_syntax_is_checked() -> None:
    data = base()
    data["connections"]["main"]["key_secret_name"] = "autopilot_key"
    error = error_for(data)
    assert (error.connection, error.field) == ("main", "key_secret_name")
    assert "not a valid Key Vault secret name" in str(error)


def test_key_vault_secret_name_is_at_most_127_characters() -> None:
    data = base()
    data["connections"]["main"]["key_secret_name"] = "k" * 128
    assert error_for(data).field == "key_secret_name"


def test_unknown_connection_key_is_rejected() -> None:
    data = base()
    data["connections"]["main"]["rate"] = 5
    error = error_for(data)
    assert (error.connection, error.field) == ("main", "rate")


def test_duplicate_export_names_are_rejected_ignoring_case() -> None:
    data = base()
    second = copy.deepcopy(data["exports"][0])
    second["name"] = "highvalue"
    second["folder"] = "other"
    data["exports"].append(second)
    error = error_for(data)
    assert (error.export, error.field) == ("highvalue", "name")
    assert "duplicate export name" in str(error)


def test_two_exports_on_one_folder_are_rejected() -> None:
    data = base()
    second = copy.deepcopy(data["exports"][0])
    second["name"] = "Other"
    data["exports"].append(second)
    error = error_for(data)
    assert (error.export, error.field) == ("Other", "folder")


def test_duplicate_segment_names_are_rejected() -> None:
    error = error_for(
        with_export(segments=[{"name": "A", "list_title": "A"}, {"name": "a", "list_title": "B"}])
    )
    assert (error.export, error.field) == ("HighValue", "segments[1].name")
    assert "duplicate segment" in str(error)


def test_duplicate_list_titles_are_rejected() -> None:
    error = error_for(
        with_export(segments=[{"name": "A", "list_title": "VIP"}, {"name": "B", "list_title": "vip"}])
    )
    assert (error.export, error.field) == ("HighValue", "segments[1].list_title")


def test_unknown_standard_field_suggests_the_closest() -> None:
    error = error_for(with_export(fields=[{"column": "City", "field": "MailingCty"}]))
    assert (error.export, error.field) == ("HighValue", "fields[0].field")
    assert "did you mean 'MailingCity'?" in str(error)


def test_standard_field_in_the_wrong_case_suggests_the_right_spelling() -> None:
    error = error_for(with_export(fields=[{"column": "Opt", "field": "Unsubscribed"}]))
    assert "did you mean 'unsubscribed'?" in str(error)


def test_bad_custom_type_is_rejected() -> None:
    error = error_for(with_export(fields=[{"column": "Tier", "custom": "Tier", "type": "text"}]))
    assert (error.export, error.field) == ("HighValue", "fields[0].type")
    assert "string, integer, float, date, boolean" in str(error)


def test_custom_field_without_type_is_rejected() -> None:
    error = error_for(with_export(fields=[{"column": "Tier", "custom": "Tier"}]))
    assert error.field == "fields[0].type"


def test_field_with_both_standard_and_custom_target_is_rejected() -> None:
    error = error_for(
        with_export(fields=[{"column": "C", "field": "Company", "custom": "C", "type": "string"}])
    )
    assert error.field == "fields[0]"
    assert "not both" in str(error)


def test_name_fields_point_at_their_own_keys() -> None:
    error = error_for(with_export(fields=[{"column": "Given", "field": "FirstName"}]))
    assert "first_name_column" in str(error)


def test_field_mapped_twice_is_rejected() -> None:
    fields = [{"column": "City", "field": "MailingCity"}, {"column": "Town", "field": "MailingCity"}]
    error = error_for(with_export(fields=fields))
    assert (error.export, error.field) == ("HighValue", "fields[1].field")
    assert "mapped twice" in str(error)


def test_custom_field_mapped_twice_is_rejected() -> None:
    fields = [
        {"column": "T1", "custom": "Loyalty Tier", "type": "string"},
        {"column": "T2", "custom": "Loyalty Tier", "type": "string"},
    ]
    assert error_for(with_export(fields=fields)).field == "fields[1].custom"


def test_email_column_mapped_as_a_field_is_rejected() -> None:
    error = error_for(with_export(fields=[{"column": "emailaddress", "custom": "Mail", "type": "string"}]))
    assert (error.export, error.field) == ("HighValue", "fields[0].column")
    assert "email column" in str(error)


@pytest.mark.parametrize("schedule", ["61 * * * *", "0 6 * * * *", "daily", "0 6 * *"])
def test_bad_cron_is_rejected(schedule: str) -> None:
    error = error_for(with_export(schedule=schedule))
    assert (error.export, error.field) == ("HighValue", "schedule")
    assert "5-field cron" in str(error)


def test_every_problem_is_reported_at_once() -> None:
    data = with_export(connection="mian", schedule="bad")
    data["connections"]["main"]["requests_per_second"] = -1
    error = error_for(data)
    assert {(p.export, p.connection, p.field) for p in error.problems} == {
        ("HighValue", None, "connection"),
        ("HighValue", None, "schedule"),
        (None, "main", "requests_per_second"),
    }
    assert len(str(error).splitlines()) == 3


def test_invalid_json_names_the_source_line_and_column() -> None:
    with pytest.raises(ConfigError, match=r"exports config 'exports.json': invalid JSON at line 2 column"):
        parse_config('{"connections": {},\n  oops}', source="exports.json")


def test_duplicate_key_in_one_object_is_rejected() -> None:
    text = '{"connections": {"main": {"key_secret_name": "a", "key_secret_name": "b"}}, "exports": []}'
    with pytest.raises(ConfigError, match="field 'key_secret_name': appears twice"):
        parse_config(text, source="exports.json")


def test_empty_exports_list_is_rejected() -> None:
    data = base()
    data["exports"] = []
    assert "at least one export" in str(error_for(data))


def test_a_file_with_errors_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exports.json"
    path.write_text(json.dumps(with_export(connection="mian")), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"exports config '{path}': export 'HighValue'"):
        load_config(str(path))
