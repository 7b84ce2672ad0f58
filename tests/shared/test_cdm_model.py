"""Parsing Customer Insights' model.json: partition locations, CSV settings, the run folder, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.cdm_model import ModelJsonError, blob_name_from_location, parse_model_json
from shared.segment_file import CsvFormat

RUN = "CustomerInsights_abcd/BlobExport/HighValue/2020/08/24/1433"
AZURE = "https://acct.blob.core.windows.net/ci-exports"
AZURITE = "http://127.0.0.1:10000/devstoreaccount1/ci-exports"


def entity(name: str, locations: list[str], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    partition: dict[str, Any] = {}
    if settings is not None:
        partition["fileFormatSettings"] = settings
    return {
        "$type": "LocalEntity",
        "name": name,
        "attributes": [
            {"name": "CustomerId", "dataType": "string"},
            {"name": "EmailAddress", "dataType": "string"},
        ],
        "partitions": [
            {"name": loc.rsplit("/", 1)[-1][:-4], "location": loc, **partition} for loc in locations
        ],
    }


def model(*entities: dict[str, Any]) -> bytes:
    return json.dumps({"name": "BlobExport", "version": "1.0", "entities": list(entities)}).encode()


def parse(data: bytes, container: str = "ci-exports") -> Any:
    return parse_model_json(data, source="ci-exports/x/model.json", container=container)


def test_azure_url_becomes_the_blob_name_inside_the_container() -> None:
    assert blob_name_from_location(f"{AZURE}/{RUN}/HighValue_1.csv", "ci-exports") == f"{RUN}/HighValue_1.csv"


def test_azurite_path_style_url_skips_the_account_segment() -> None:
    assert (
        blob_name_from_location(f"{AZURITE}/{RUN}/HighValue_1.csv", "ci-exports") == f"{RUN}/HighValue_1.csv"
    )


def test_localhost_is_path_style_too() -> None:
    url = "http://localhost:10000/devstoreaccount1/ci-exports/a/b.csv"
    assert blob_name_from_location(url, "ci-exports") == "a/b.csv"


def test_location_is_percent_decoded() -> None:
    url = f"{AZURE}/CustomerInsights_abcd/My%20Export/Seg%C3%A9/2020/08/24/1433/Seg%C3%A9_1.csv"
    assert (
        blob_name_from_location(url, "ci-exports")
        == "CustomerInsights_abcd/My Export/Segé/2020/08/24/1433/Segé_1.csv"
    )


def test_abfss_url_names_the_container_before_the_at_sign() -> None:
    url = "abfss://ci-exports@acct.dfs.core.windows.net/a/b.csv"
    assert blob_name_from_location(url, "ci-exports") == "a/b.csv"


def test_location_in_another_container_is_refused() -> None:
    with pytest.raises(ValueError, match="container 'other', not 'ci-exports'"):
        blob_name_from_location("https://acct.blob.core.windows.net/other/a.csv", "ci-exports")


def test_empty_container_accepts_any_container() -> None:
    assert blob_name_from_location("https://acct.blob.core.windows.net/other/a/b.csv", "") == "a/b.csv"


def test_partitions_keep_their_order_and_blob_names() -> None:
    files = [f"{RUN}/HighValue_1.csv", f"{RUN}/HighValue_2.csv"]
    parsed = parse(model(entity("HighValue", [f"{AZURE}/{f}" for f in files])))
    high_value = parsed.entities["HighValue"]
    assert [p.blob_name for p in high_value.partitions] == files
    assert [p.name for p in high_value.partitions] == ["HighValue_1", "HighValue_2"]
    assert high_value.attributes == ("CustomerId", "EmailAddress")
    assert parsed.name == "BlobExport"


def test_run_folder_is_the_folder_of_the_partitions() -> None:
    parsed = parse(
        model(entity("HighValue", [f"{AZURE}/{RUN}/HighValue_1.csv", f"{AZURE}/{RUN}/HighValue_2.csv"]))
    )
    assert parsed.entities["HighValue"].run_folder == RUN


def test_run_folder_of_an_entity_without_partitions_is_empty() -> None:
    parsed = parse(model(entity("Empty", [])))
    assert parsed.entities["Empty"].run_folder == ""


def test_absent_column_headers_means_no_header_row() -> None:
    parsed = parse(
        model(entity("HighValue", [f"{AZURE}/{RUN}/HighValue_1.csv"], {"$type": "CsvFormatSettings"}))
    )
    assert parsed.entities["HighValue"].partitions[0].fmt == CsvFormat(column_headers=False)


def test_absent_file_format_settings_means_no_header_row() -> None:
    parsed = parse(model(entity("HighValue", [f"{AZURE}/{RUN}/HighValue_1.csv"])))
    assert parsed.entities["HighValue"].partitions[0].fmt.column_headers is False


@pytest.mark.parametrize("headers", [True, False])
def test_column_headers_setting_is_kept(headers: bool) -> None:
    settings = {"$type": "CsvFormatSettings", "columnHeaders": headers, "delimiter": ";", "encoding": "UTF-8"}
    parsed = parse(model(entity("HighValue", [f"{AZURE}/{RUN}/HighValue_1.csv"], settings)))
    assert parsed.entities["HighValue"].partitions[0].fmt == CsvFormat(headers, ";", "utf-8")


def test_azurite_locations_in_model_json() -> None:
    parsed = parse(model(entity("HighValue", [f"{AZURITE}/{RUN}/HighValue_1.csv"])))
    assert parsed.entities["HighValue"].partitions[0].blob_name == f"{RUN}/HighValue_1.csv"


def test_entity_lookup_ignores_case() -> None:
    parsed = parse(model(entity("HighValue", [])))
    found = parsed.entity("highvalue")
    assert found is not None
    assert found.name == "HighValue"
    assert parsed.entity("Other") is None


def test_reference_entities_are_skipped() -> None:
    reference = {"$type": "ReferenceEntity", "name": "Ref", "source": "x", "modelId": "y"}
    parsed = parse(model(entity("HighValue", []), reference))
    assert list(parsed.entities) == ["HighValue"]


def test_wrong_container_error_names_the_file_and_json_path() -> None:
    other = "https://acct.blob.core.windows.net/other"
    data = model(entity("A", []), entity("B", []), entity("C", [f"{other}/{RUN}/C_1.csv"]))
    with pytest.raises(ModelJsonError) as info:
        parse(data)
    assert str(info.value).startswith("ci-exports/x/model.json: entities[2].partitions[0].location: ")
    assert info.value.path == "entities[2].partitions[0].location"


def test_missing_location_names_the_json_path() -> None:
    data = model({"name": "A", "attributes": [], "partitions": [{"name": "A_1"}]})
    with pytest.raises(
        ModelJsonError, match=r"entities\[0\]\.partitions\[0\]\.location: must be a non-empty string"
    ):
        parse(data)


def test_location_that_is_not_a_url_is_an_error() -> None:
    data = model(entity("A", ["A/2020/08/24/1433/A_1.csv"]))
    with pytest.raises(ModelJsonError, match="not a blob URL"):
        parse(data)


def test_attribute_without_name_names_the_json_path() -> None:
    data = model({"name": "A", "attributes": [{"dataType": "string"}], "partitions": []})
    with pytest.raises(ModelJsonError, match=r"entities\[0\]\.attributes\[0\]\.name"):
        parse(data)


def test_non_csv_partitions_are_refused() -> None:
    data = model(entity("A", [f"{AZURE}/{RUN}/A_1.parquet"], {"$type": "ParquetFormatSettings"}))
    with pytest.raises(ModelJsonError, match="unsupported file format 'ParquetFormatSettings'"):
        parse(data)


def test_the_same_partition_listed_twice_is_an_error() -> None:
    location = f"{AZURE}/{RUN}/A_1.csv"
    with pytest.raises(ModelJsonError, match=r"entities\[0\]\.partitions\[1\]\.location: .* already listed"):
        parse(model(entity("A", [location, location])))


def test_invalid_json_names_the_file() -> None:
    with pytest.raises(ModelJsonError, match=r"ci-exports/x/model.json: invalid JSON at line 1"):
        parse(b'{"entities": [')


def test_entities_are_required() -> None:
    with pytest.raises(ModelJsonError, match="entities: must be a list"):
        parse(b'{"name": "x"}')


def test_byte_order_mark_is_accepted() -> None:
    assert parse(b"\xef\xbb\xbf" + model(entity("A", []))).entities["A"].name == "A"
