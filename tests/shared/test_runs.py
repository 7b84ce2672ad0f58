"""Run resolution: which blob means what, and that a run has one identity whatever door it comes in by."""

from __future__ import annotations

import json

import pytest

from shared.config import Connection, ExportConfig, ExportsConfig, SegmentConfig
from shared.runs import BlobKind, RunNotFoundError, classify_blob, latest_runs, named_run, resolve_blob

FOLDER = "CustomerInsights_abcd/BlobExport"
RUN = f"{FOLDER}/HighValue/2026/11/28/1433"


def make_config(**overrides: object) -> ExportsConfig:
    values: dict[str, object] = {
        "name": "HighValue",
        "connection": "main",
        "folder": FOLDER,
        "segments": (SegmentConfig("HighValue", "High value"), SegmentConfig("Lapsed", "Lapsed")),
        "email_column": "EmailAddress",
        "first_name_column": None,
        "last_name_column": None,
        "fields": (),
        "schedule": None,
    }
    values.update(overrides)
    export = ExportConfig(**values)  # type: ignore[arg-type]
    return ExportsConfig(
        connections={"main": Connection("main", "Main", "autopilot-key", 5.0)}, exports={export.name: export}
    )


def model_json(*entities: tuple[str, list[str]]) -> bytes:
    return json.dumps(
        {
            "name": "BlobExport",
            "version": "1.0",
            "entities": [
                {
                    "$type": "LocalEntity",
                    "name": name,
                    "attributes": [
                        {"name": "CustomerId", "dataType": "string"},
                        {"name": "EmailAddress", "dataType": "string"},
                    ],
                    "partitions": [
                        {
                            "name": blob.rsplit("/", 1)[-1][:-4],
                            "location": f"https://acct.blob.core.windows.net/ci-exports/{blob}",
                            "fileFormatSettings": {"$type": "CsvFormatSettings", "columnHeaders": False},
                        }
                        for blob in blobs
                    ],
                }
                for name, blobs in entities
            ],
        }
    ).encode()


class FakeStore:
    """An in-memory blob listing; run resolution only reads and lists."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def read_bytes(self, container: str, name: str) -> bytes:
        try:
            return self.blobs[name]
        except KeyError:
            raise FileNotFoundError(name) from None

    def list_names(self, container: str, prefix: str = "") -> list[str]:
        return sorted(n for n in self.blobs if n.startswith(prefix))


def test_model_json_is_classified_as_a_run_description() -> None:
    claim = classify_blob(make_config(), f"{FOLDER}/model.json")
    assert claim.kind is BlobKind.MODEL_JSON
    assert claim.export is not None
    assert claim.export.name == "HighValue"


def test_partition_file_is_classified_as_partition_not_as_a_manual_csv() -> None:
    assert classify_blob(make_config(), f"{RUN}/HighValue_1.csv").kind is BlobKind.PARTITION


def test_csv_dropped_in_a_segment_folder_is_a_manual_run_of_that_segment() -> None:
    claim = classify_blob(make_config(), f"{FOLDER}/lapsed/my upload.csv")
    assert claim.kind is BlobKind.MANUAL_CSV
    assert claim.segment == "Lapsed"


def test_blob_outside_every_export_is_unclaimed() -> None:
    assert classify_blob(make_config(), "somewhere/else/file.csv").kind is BlobKind.UNCLAIMED
    assert classify_blob(make_config(), f"{FOLDER}/Unknown/file.csv").kind is BlobKind.UNCLAIMED


def test_every_partition_and_model_json_resolve_to_the_same_instance_id() -> None:
    files = [f"{RUN}/HighValue_1.csv", f"{RUN}/HighValue_2.csv"]
    store = FakeStore({f"{FOLDER}/model.json": model_json(("HighValue", files))})
    ids = set()
    for blob in [*files, f"{FOLDER}/model.json"]:
        _, runs = resolve_blob(make_config(), store, "ci-exports", blob)
        assert len(runs) == 1
        ids.add(runs[0].instance_id)
        assert runs[0].files == tuple(files)
        assert runs[0].columns == ("CustomerId", "EmailAddress")
    assert len(ids) == 1
    assert "/" not in ids.pop()


def test_partition_before_model_json_starts_nothing() -> None:
    _, runs = resolve_blob(make_config(), FakeStore({}), "ci-exports", f"{RUN}/HighValue_1.csv")
    assert runs == []


def test_partition_of_an_older_run_than_model_json_starts_nothing() -> None:
    newer = [f"{FOLDER}/HighValue/2026/11/29/0800/HighValue_1.csv"]
    store = FakeStore({f"{FOLDER}/model.json": model_json(("HighValue", newer))})
    _, runs = resolve_blob(make_config(), store, "ci-exports", f"{RUN}/HighValue_1.csv")
    assert runs == []


def test_a_new_run_folder_is_a_new_instance() -> None:
    first = FakeStore({f"{FOLDER}/model.json": model_json(("HighValue", [f"{RUN}/HighValue_1.csv"]))})
    later_run = f"{FOLDER}/HighValue/2026/11/29/0800/HighValue_1.csv"
    second = FakeStore({f"{FOLDER}/model.json": model_json(("HighValue", [later_run]))})
    a = latest_runs(make_config(), first, "HighValue", "ci-exports")[0]
    b = latest_runs(make_config(), second, "HighValue", "ci-exports")[0]
    assert a.instance_id != b.instance_id
    assert a.label == "2026-11-28T1433"


def test_model_json_runs_only_configured_segments() -> None:
    store = FakeStore(
        {
            f"{FOLDER}/model.json": model_json(
                ("HighValue", [f"{RUN}/HighValue_1.csv"]), ("Other", [f"{RUN}/x_1.csv"])
            )
        }
    )
    runs = latest_runs(make_config(), store, "HighValue", "ci-exports")
    assert [r.segment for r in runs] == ["HighValue"]


def test_reuploaded_manual_csv_with_new_etag_is_a_new_run() -> None:
    name = f"{FOLDER}/HighValue/list.csv"
    _, first = resolve_blob(make_config(), FakeStore({}), "ci-exports", name, etag='"0x1"')
    _, second = resolve_blob(make_config(), FakeStore({}), "ci-exports", name, etag='"0x2"')
    assert first[0].instance_id != second[0].instance_id
    assert first[0].fmt.column_headers is True


def test_latest_run_without_model_json_says_which_file_is_missing() -> None:
    with pytest.raises(RunNotFoundError, match=r"model\.json"):
        latest_runs(make_config(), FakeStore({}), "HighValue", "ci-exports")


def test_named_older_run_lists_its_partitions_in_partition_order() -> None:
    older = f"{FOLDER}/HighValue/2026/11/01/0900"
    store = FakeStore(
        {
            f"{FOLDER}/model.json": model_json(("HighValue", [f"{RUN}/HighValue_1.csv"])),
            f"{older}/HighValue_10.csv": b"",
            f"{older}/HighValue_2.csv": b"",
        }
    )
    run = named_run(make_config(), store, "HighValue", "HighValue", older, "ci-exports")
    assert run.files == (f"{older}/HighValue_2.csv", f"{older}/HighValue_10.csv")
    assert run.run_folder == older


def test_named_run_that_does_not_exist_is_an_error_naming_it() -> None:
    with pytest.raises(RunNotFoundError, match=r"2020/01/01"):
        named_run(
            make_config(),
            FakeStore({}),
            "HighValue",
            "HighValue",
            f"{FOLDER}/HighValue/2020/01/01/0000",
            "ci-exports",
        )
