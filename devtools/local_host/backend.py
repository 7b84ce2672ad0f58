"""The seam between the local durable engine and the pieces that start and query orchestrations.

The durable-client endpoint (what ``durable_client_input`` talks to) and the local runner depend only
on this protocol, so they can be built and tested apart from the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

RUNTIME_STATUSES = ("Pending", "Running", "Completed", "ContinuedAsNew", "Failed", "Terminated", "Suspended")
NON_RUNNING_STATUSES = frozenset({"Completed", "Failed", "Terminated"})


@dataclass
class InstanceStatus:
    """What the Durable Functions HTTP API reports about one orchestration instance."""

    name: str
    instance_id: str
    runtime_status: str
    created_time: datetime
    last_updated_time: datetime
    input: Any = None
    output: Any = None
    custom_status: Any = None
    parent_instance_id: str | None = None
    history: list[dict[str, Any]] | None = field(default=None)


class OrchestrationBackend(Protocol):
    """What a durable task hub offers to clients: start, query, list, terminate, raise events, purge."""

    def start_new(self, name: str, instance_id: str | None, input: Any) -> str:
        """Start ``name``; an existing instance in a non-running state is replaced, a running one kept."""
        ...

    def get_status(self, instance_id: str, *, show_history: bool = False) -> InstanceStatus | None: ...

    def list_instances(
        self,
        *,
        runtime_status: Iterable[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[InstanceStatus]: ...

    def terminate(self, instance_id: str, reason: str) -> bool: ...

    def raise_event(self, instance_id: str, event_name: str, data: Any) -> bool: ...

    def purge(self, instance_id: str) -> bool: ...
