"""The durable engine's pure parts: reply parsing, determinism keys, event order, files, timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dateutil.parser import parse as dateutil_parse

from devtools.local_host import history as h
from devtools.local_host.actions import (
    CALL_ACTIVITY,
    CALL_ACTIVITY_WITH_RETRY,
    CREATE_TIMER,
    WAIT_FOR_EXTERNAL_EVENT,
    first_mismatch,
    flatten,
    parse_failure,
    parse_reply,
)
from devtools.local_host.episode import select_events
from devtools.local_host.fast_timestamps import make_fast_parser
from devtools.local_host.instance_state import Instance, RetryChain, from_meta, to_meta
from devtools.local_host.instance_store import InstanceStore

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _instance() -> Instance:
    return Instance("inst", "orch", None, "Running", NOW, NOW, "exec", NOW)


def test_flatten_lists_atomic_actions_in_sdk_numbering_order() -> None:
    actions = [
        [
            {"actionType": CALL_ACTIVITY, "functionName": "a", "input": "1"},
            {
                "actionType": 12,
                "compoundActions": [
                    {
                        "actionType": 12,
                        "compoundActions": [{"actionType": CALL_ACTIVITY_WITH_RETRY, "functionName": "b"}],
                    },
                    {
                        "actionType": 11,
                        "compoundActions": [
                            {"actionType": WAIT_FOR_EXTERNAL_EVENT, "externalEventName": "go"},
                            {"actionType": CREATE_TIMER, "fireAt": "2025-03-01T12:00:00.000000Z"},
                        ],
                    },
                ],
            },
        ]
    ]

    leaves = flatten(actions)

    assert [leaf.action_type for leaf in leaves] == [0, 1, 6, 5]
    assert [leaf.takes_id for leaf in leaves] == [True, True, False, True]


def test_v1_replies_are_refused_because_their_suffix_cannot_be_diffed() -> None:
    with pytest.raises(Exception, match="V1 replay schema"):
        parse_reply(json.dumps({"isDone": False, "actions": [[]]}))


def test_orchestrator_error_and_state_are_read_from_the_out_of_proc_suffix() -> None:
    state = {
        "isDone": False,
        "schemaVersion": 2,
        "actions": [[{"actionType": 0, "functionName": "a"}]],
        "error": "boom",
    }
    raised = Exception("boom\n\n$OutOfProcData$:" + json.dumps(state))

    reply = parse_failure(raised)

    assert reply is not None
    assert (reply.error, [leaf.name for leaf in reply.leaves]) == ("boom", ["a"])


def test_an_exception_without_state_is_not_mistaken_for_an_orchestrator_reply() -> None:
    assert parse_failure(RuntimeError("Internal Durable Functions error")) is None


def test_first_mismatch_names_the_task_and_both_calls() -> None:
    known = [(0, ("activity", "a", "1")), (1, ("activity", "b", "2"))]

    same = first_mismatch(known, [("activity", "a", "1"), ("activity", "b", "2"), ("timer",)])
    changed = first_mismatch(known, [("activity", "a", "1"), ("activity", "b", "3")])
    shorter = first_mismatch(known, [("activity", "a", "1")])

    assert same is None
    assert (
        changed
        == "task 1 is activity 'b' with input 3 on replay, but the history has activity 'b' with input 2"
    )
    assert shorter is not None
    assert shorter.startswith("the history has 2 scheduled tasks but the replay produced only 1")


def test_mismatch_message_masks_email_addresses() -> None:
    message = first_mismatch(
        [(0, ("activity", "a", '"ann@example.org"'))], [("activity", "a", '"bob@example.org"')]
    )

    assert message is not None
    assert "@example.org" not in message


def test_retry_events_are_delivered_before_events_that_resume_the_orchestrator() -> None:
    inst = _instance()
    inst.next_seq = 6
    inst.activities = {3: ("a", None), 5: ("flaky", None)}
    inst.retries = {5: RetryChain(5, "activity", "flaky", None, None, 3, 10, attempt_id=5)}
    completed = h.task_completed("t", task_id=3, result_json="1")
    failed = h.task_failed("t", task_id=5, reason="r", details="d")
    inst.inbox = [completed, failed]

    delivered, kept = select_events(inst, None)

    assert delivered == [failed, completed]
    assert kept == []


def test_duplicate_and_stale_completions_are_dropped_and_future_ones_kept() -> None:
    inst = _instance()
    inst.next_seq = 4
    inst.activities = {2: ("a", None)}
    first = h.task_completed("t", task_id=2, result_json="1")
    duplicate = h.task_completed("t", task_id=2, result_json="1")
    stale = h.task_completed("t", task_id=1, result_json="1")
    future = h.sub_orchestration_completed("t", task_id=9, result_json="1")
    inst.inbox = [first, duplicate, stale, future]

    delivered, kept = select_events(inst, None)

    assert (delivered, kept) == ([first], [future])


def test_max_batch_bounds_the_events_of_one_episode() -> None:
    inst = _instance()
    inst.next_seq = 3
    inst.activities = {0: ("a", None), 1: ("a", None), 2: ("a", None)}
    inst.inbox = [h.task_completed("t", task_id=i, result_json="1") for i in range(3)]

    delivered, kept = select_events(inst, 2)

    assert [e["TaskScheduledId"] for e in delivered] == [0, 1]
    assert [e["TaskScheduledId"] for e in kept] == [2]


def test_fast_parser_returns_exactly_what_dateutil_returns() -> None:
    fast = make_fast_parser(dateutil_parse)
    samples = [h.format_timestamp(NOW + timedelta(microseconds=n * 123457, days=n)) for n in range(50)]
    samples += ["2025-03-01T12:00:00.1234567Z", "2025-03-01T12:00:00Z", "2025-03-01 12:00"]

    for text in samples:
        expected, actual = dateutil_parse(text), fast(text)
        assert (actual, actual.tzinfo) == (expected, expected.tzinfo), text


def test_timestamps_round_trip_in_both_precisions() -> None:
    moment = datetime(2025, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)

    assert h.parse_timestamp(h.format_timestamp(moment)) == moment
    assert h.format_timestamp(moment, fast=False) == "2025-03-01T12:00:00.6543210Z"
    assert h.parse_timestamp(h.format_timestamp(moment, fast=False)) == moment


def test_history_bytes_after_the_last_commit_are_ignored(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    written = store.append_history("inst", 0, ['{"a":1}', '{"b":2}'])
    store.append_history("inst", 0, ['{"uncommitted":3}'])

    lines = store.read_history("inst", 0, written)
    store.truncate_history("inst", 0, written)

    assert lines == ['{"a":1}', '{"b":2}']
    assert (store.folder("inst") / "history-0.jsonl").stat().st_size == written


def test_a_torn_last_inbox_line_is_dropped(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    store.append_journal("inst", 3, {"EventType": 5, "TaskScheduledId": 1})
    path = store.folder("inst") / "inbox-3.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"EventType": 5, "TaskSched')

    assert store.read_journal("inst", 3) == [{"EventType": 5, "TaskScheduledId": 1}]


def test_metadata_round_trips_and_rebuilds_pending_work_from_history(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    inst = _instance()
    inst.next_seq = 2
    inst.activities = {1: ("b", '"x"')}
    events = [
        h.task_scheduled("t", task_id=0, name="a", input_json="1"),
        h.task_scheduled("t", task_id=1, name="b", input_json='"x"'),
        h.timer_created("t", task_id=2, fire_at="f", retry_of=1),
    ]
    lines = inst.append_history(events, full_sdk_history=False)
    inst.history_bytes = store.append_history("inst", 0, lines)
    store.commit(to_meta(inst))

    (meta,) = store.load_metas()
    loaded = from_meta(meta)
    loaded.rebuild_from_history(store.read_history("inst", 0, loaded.history_bytes), full_sdk_history=False)

    assert loaded.activities == {1: ("b", '"x"')}
    assert loaded.known == [(0, ("activity", "a", "1")), (1, ("activity", "b", '"x"'))]
    assert loaded.sdk_history == []
