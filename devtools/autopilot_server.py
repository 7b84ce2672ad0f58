"""A local Autopilot-compatible server: the API of specs/autopilot-api.md, in memory, with faults.

Tests, demos and benchmarks need an Autopilot that behaves like the real one where it is documented
and can be switched between the plausible behaviours where it is not (a bad contact refusing a whole
bulk request or silently missing from its answer; bulk upserts honouring ``_autopilot_list`` or not;
duplicate list names answered 409 or creating a second list), and that fails on demand (throttling,
5xx, dropped connections, slow answers, key rotation) with a seeded RNG, so a test can show that the
client delivers every contact anyway and never exceeds the rate limit.

It speaks HTTP/1.1 keep-alive with exact Content-Length (like a real API behind a load balancer), so
the client's connection pool is exercised as in production. State is in-process and lock-guarded;
tests read it directly, and a separate process is inspected and steered through ``/_admin/...``.

Run: ``python -m devtools.autopilot_server --port 0 --key K --rps 5`` prints
``AUTOPILOT_BASE_URL=http://127.0.0.1:<port>/v1`` and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import json
import logging
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
ADMIN_PREFIX = "/_admin"
MAX_BULK = 100
PAGE_SIZE = 100
SPECIAL_KEYS = frozenset({"_autopilot_list", "_autopilot_session_id", "_NewEmail", "notify"})
CUSTOM_TYPES = ("string", "integer", "float", "date", "boolean")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_CUSTOM_KEY = re.compile(r"^(string|integer|float|date|boolean)--\S+$")
BAD_CONTACT_MODES = ("reject", "omit")
DUPLICATE_LIST_MODES = ("conflict", "create")


@dataclass
class Faults:
    """Failures to inject, settable at any time (``set_faults``, ``POST /_admin/faults``).

    Rates are probabilities per API request drawn from the server's seeded RNG; ``*_next`` counters
    apply to the next N API requests and count down.
    """

    server_error_rate: float = 0.0
    server_error_status: int = 500
    drop_rate: float = 0.0
    """Close the connection without answering (a dropped connection or a killed backend)."""
    drop_after_processing: bool = False
    """Whether a dropped request took effect first (the answer was lost, not the request)."""
    latency: float = 0.0
    """Seconds added to every API request."""
    throttle_next: int = 0
    """A 429 storm: the next N API requests are answered 429 whatever the rate."""
    throttle_retry_after: float | None = None
    """``Retry-After`` seconds sent with the storm's 429s; None sends no header (as documented)."""
    stall_next: int = 0
    """The next N API requests wait ``stall_seconds`` before answering (a client timeout)."""
    stall_seconds: float = 0.0
    stale_lists_next: int = 0
    """The next N ``GET /lists`` answer an empty list (a lagging index, or a creator racing the caller)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Faults | None = None) -> Faults:
        """``base`` with the given fields changed; an unknown field is an error, not a silent no-op."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown fault field(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return replace(base or cls(), **data)


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the server saw it; ``status`` 0 means the connection was dropped."""

    time: float  # time.monotonic() at arrival
    method: str
    path: str
    status: int
    contacts: int


@dataclass
class _Reply:
    status: int = 200
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    delay: float = 0.0
    empty: bool = False  # send no body at all (some real 404s)


class _ApiError(Exception):
    def __init__(self, status: int, payload: dict[str, Any] | None) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


def _error(status: int, error: str, message: str) -> _ApiError:
    return _ApiError(status, {"error": error, "message": message})


def _coded(status: int, code: str, message: str) -> _ApiError:
    return _ApiError(status, {"code": code, "message": message})


def _contact_id(email: str) -> str:
    return "person_" + hashlib.sha256(email.encode("utf-8")).hexdigest()[:32].upper()


def _custom_field_name(key: str) -> tuple[str, str]:
    kind, _, name = key.partition("--")
    return kind, name.replace("--", " ")


def max_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most events in any half-open interval of ``window`` seconds (two pointers over sorted times)."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class LocalAutopilot:
    """The server and its state. Use as a context manager, or ``start()``/``stop()``.

    Public state (read it under ``lock`` while requests may be in flight): ``contacts`` (lower-cased
    email -> stored contact), ``lists`` (id -> title), ``list_members`` (id -> lower-cased emails),
    ``requests`` (the request log), ``faults``.
    """

    def __init__(
        self,
        api_key: str,
        *,
        requests_per_second: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        bad_contact_mode: str = "reject",
        duplicate_list_mode: str = "conflict",
        bulk_honours_list: bool = True,
        page_size: int = PAGE_SIZE,
        seed: int = 0,
    ) -> None:
        if bad_contact_mode not in BAD_CONTACT_MODES:
            raise ValueError(f"bad_contact_mode must be one of {BAD_CONTACT_MODES}")
        if duplicate_list_mode not in DUPLICATE_LIST_MODES:
            raise ValueError(f"duplicate_list_mode must be one of {DUPLICATE_LIST_MODES}")
        self.lock = threading.RLock()
        self._api_key = api_key
        self._rps = requests_per_second
        self._host = host
        self._port = port
        self.bad_contact_mode = bad_contact_mode
        self.duplicate_list_mode = duplicate_list_mode
        self.bulk_honours_list = bulk_honours_list
        self.refused_domains: set[str] = set()
        """Addresses at these domains are refused as invalid (Autopilot's own rules are stricter than
        RFC syntax, e.g. for blocked domains): lets tests see a contact our validation accepts refused."""
        self.page_size = page_size
        self.faults = Faults()
        self._rng = random.Random(seed)
        self.contacts: dict[str, dict[str, Any]] = {}
        self.upsert_counts: Counter[str] = Counter()  # lower-cased email -> times upserted (resend checks)
        self._ids: dict[str, str] = {}  # contact id -> email
        self.lists: dict[str, str] = {}
        self.list_members: dict[str, set[str]] = {}
        self.requests: list[RequestRecord] = []
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._version = 0  # bumped by every change of contacts or members: keys the sorted-page cache
        self._sorted: dict[str, tuple[tuple[int, int], list[str]]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalAutopilot:
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.app = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-autopilot", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalAutopilot:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the local Autopilot server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The server root (the admin API lives at ``url + "/_admin/..."``)."""
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What the client takes as its base URL (``AUTOPILOT_BASE_URL``)."""
        return self.url + API_PREFIX

    # -- control ---------------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        with self.lock:
            return self._api_key

    def rotate_key(self, new_key: str) -> None:
        """Regenerate the key: the old one answers 401 from now on."""
        with self.lock:
            self._api_key = new_key

    @property
    def requests_per_second(self) -> float | None:
        with self.lock:
            return self._rps

    @requests_per_second.setter
    def requests_per_second(self, value: float | None) -> None:
        with self.lock:
            self._rps = value
            self._buckets.clear()

    def set_faults(self, faults: Faults | None = None, *, seed: int | None = None, **changes: Any) -> Faults:
        """Replace the faults (``faults``) or change some fields (keywords); ``seed`` reseeds the RNG."""
        with self.lock:
            self.faults = Faults.from_dict(changes, faults or self.faults)
            if seed is not None:
                self._rng.seed(seed)
            return self.faults

    def configure(self, **settings: Any) -> None:
        """Switch the undocumented behaviours at runtime (also ``POST /_admin/config``)."""
        allowed = {"bad_contact_mode", "duplicate_list_mode", "bulk_honours_list", "requests_per_second"}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
        with self.lock:
            if "bad_contact_mode" in settings:
                if settings["bad_contact_mode"] not in BAD_CONTACT_MODES:
                    raise ValueError(f"bad_contact_mode must be one of {BAD_CONTACT_MODES}")
                self.bad_contact_mode = settings["bad_contact_mode"]
            if "duplicate_list_mode" in settings:
                if settings["duplicate_list_mode"] not in DUPLICATE_LIST_MODES:
                    raise ValueError(f"duplicate_list_mode must be one of {DUPLICATE_LIST_MODES}")
                self.duplicate_list_mode = settings["duplicate_list_mode"]
            if "bulk_honours_list" in settings:
                self.bulk_honours_list = bool(settings["bulk_honours_list"])
            if "requests_per_second" in settings:
                rps = settings["requests_per_second"]
                self.requests_per_second = None if rps in (None, 0) else float(rps)

    def reset(self) -> None:
        """Forget every contact, list, request and fault (the key and the switches stay)."""
        with self.lock:
            self.contacts.clear()
            self.upsert_counts.clear()
            self._ids.clear()
            self.lists.clear()
            self.list_members.clear()
            self.requests.clear()
            self._buckets.clear()
            self._sorted.clear()
            self._version += 1
            self.faults = Faults()

    # -- inspection ------------------------------------------------------------------------------

    def request_log(self) -> list[RequestRecord]:
        with self.lock:
            return list(self.requests)

    def members(self, list_id: str) -> set[str]:
        with self.lock:
            return set(self.list_members.get(list_id, set()))

    def list_id(self, title: str) -> str | None:
        with self.lock:
            return next((lid for lid, t in self.lists.items() if t == title), None)

    def create_list(self, title: str) -> str:
        """Create a list directly (a list that existed before the export)."""
        with self.lock:
            list_id = "contactlist_" + uuid.uuid4().hex
            self.lists[list_id] = title
            self.list_members[list_id] = set()
            return list_id

    def max_requests_in_window(self, window: float = 1.0) -> int:
        """The most API requests that arrived within any ``window`` seconds: the client's real pace."""
        with self.lock:
            return max_in_window((r.time for r in self.requests), window)

    def state(self) -> dict[str, Any]:
        """The counts ``GET /_admin/state`` answers."""
        with self.lock:
            return {
                "contacts": len(self.contacts),
                "lists": [
                    {"list_id": lid, "title": title, "members": len(self.list_members.get(lid, ()))}
                    for lid, title in self.lists.items()
                ],
                "requests": len(self.requests),
                "requests_by_status": {
                    str(k): v for k, v in sorted(Counter(r.status for r in self.requests).items())
                },
                "contacts_sent": sum(r.contacts for r in self.requests),
                "contacts_upserted_more_than_once": sum(1 for n in self.upsert_counts.values() if n > 1),
                "max_requests_in_1s": self.max_requests_in_window(1.0),
                "requests_per_second": self._rps,
                "bad_contact_mode": self.bad_contact_mode,
                "duplicate_list_mode": self.duplicate_list_mode,
                "bulk_honours_list": self.bulk_honours_list,
                "faults": asdict(self.faults),
            }

    # -- request handling (called by the handler threads) ----------------------------------------

    def handle_api(self, method: str, path: str, key: str | None, body: bytes, arrived: float) -> _Reply:
        """Faults, key check, rate limit, then the endpoint; every outcome lands in the request log."""
        parsed: Any = None
        contacts = 0
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = _ParseFailure
        if isinstance(parsed, dict):
            if isinstance(parsed.get("contacts"), list):
                contacts = len(parsed["contacts"])
            elif isinstance(parsed.get("contact"), dict):
                contacts = 1
        with self.lock:
            faults = self.faults
            delay = faults.latency
            if faults.stall_next > 0:
                faults.stall_next -= 1
                delay += faults.stall_seconds
            drop = faults.drop_rate > 0 and self._rng.random() < faults.drop_rate
            fail = faults.server_error_rate > 0 and self._rng.random() < faults.server_error_rate
            storm = faults.throttle_next > 0
            if storm:
                faults.throttle_next -= 1
            reply: _Reply
            if drop and not faults.drop_after_processing:
                reply = _Reply(drop=True)
            elif storm:
                reply = self._throttled(faults.throttle_retry_after)
            elif fail:
                reply = _Reply(
                    faults.server_error_status,
                    {"error": "Internal Server Error", "message": "Something went wrong, please try again."},
                )
            elif key is None or key != self._api_key:
                reply = _Reply(401, {"error": "Unauthorized", "message": "Invalid or missing API key."})
            elif not self._take_token(key, arrived):
                reply = self._throttled(None)
            else:
                reply = self._route(method, path, parsed)
                if drop:
                    reply = _Reply(drop=True)
            reply.delay = delay
            self.requests.append(
                RequestRecord(arrived, method, path, 0 if reply.drop else reply.status, contacts)
            )
            return reply

    def _throttled(self, retry_after: float | None) -> _Reply:
        rate = self._rps if self._rps is not None else 5
        shown = int(rate) if float(rate).is_integer() else rate
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = (
                str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            )
        return _Reply(
            429,
            {"error": "Too Many Requests", "message": f"You have exceeded your request rate of {shown} r/s."},
            headers,
        )

    def _take_token(self, key: str, now: float) -> bool:
        """A token bucket per key, as full as one second of requests: bursts up to the rate, no more."""
        if self._rps is None:
            return True
        capacity = max(1.0, self._rps)
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - last) * self._rps)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _route(self, method: str, path: str, body: Any) -> _Reply:
        if body is _ParseFailure:
            return _Reply(400, {"error": "Bad Request", "message": "The request body is not valid JSON."})
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        try:
            handler = self._match(method, parts)
            if handler is None:
                raise _coded(404, "NotFound", f"{method} {path} does not exist.")
            return handler(body)
        except _ApiError as exc:
            return _Reply(exc.status, exc.payload, empty=exc.payload is None)

    def _match(self, method: str, p: list[str]) -> Callable[[Any], _Reply] | None:
        n = len(p)
        if n == 1 and p[0] == "contact" and method == "POST":
            return self._post_contact
        if n == 1 and p[0] == "contacts":
            if method == "POST":
                return self._post_contacts
            if method == "GET":
                return lambda _body: self._page_contacts(None)
        if n == 2 and p[0] == "contacts" and method == "GET":
            if p[1] == "custom_fields":
                return lambda _body: self._custom_fields()
            return lambda _body: self._page_contacts(p[1])
        if n == 2 and p[0] == "contact":
            if method == "GET":
                return lambda _body: self._get_contact(p[1])
            if method == "DELETE":
                return lambda _body: self._delete_contact(p[1])
        if n == 3 and p[0] == "contact" and p[2] == "unsubscribe" and method == "POST":
            return lambda _body: self._unsubscribe(p[1])
        if n == 1 and p[0] == "lists" and method == "GET":
            return lambda _body: self._get_lists()
        if n == 1 and p[0] == "list" and method == "POST":
            return self._post_list
        if n == 4 and p[0] == "list" and p[2] == "contact" and method in ("POST", "GET", "DELETE"):
            return lambda _body: self._membership(method, p[1], p[3])
        if n in (3, 4) and p[0] == "list" and p[2] == "contacts" and method == "GET":
            return lambda _body: self._page_list(p[1], p[3] if n == 4 else None)
        return None

    # -- contacts --------------------------------------------------------------------------------

    def _problem(self, contact: Any, index: int | None) -> str | None:
        """Why a contact would be refused, naming it as the real API does (its message echoes the email)."""
        where = "Contact" if index is None else f"Contact {index}"
        if not isinstance(contact, dict):
            return f"{where} is not an object."
        address = contact.get("Email")
        if not isinstance(address, str) or not address.strip():
            return f"{where} has no Email."
        if (
            not _EMAIL.match(address.strip())
            or address.strip().lower().rpartition("@")[2] in self.refused_domains
        ):
            return f"{where} has an invalid Email: '{address}'."
        custom = contact.get("custom")
        if custom is not None:
            if not isinstance(custom, dict):
                return f"{where}: 'custom' must be an object."
            for name in custom:
                if not _CUSTOM_KEY.match(str(name)):
                    return (
                        f"{where}: custom field '{name}' must be written <type>--<Name> with type one of "
                        f"{', '.join(CUSTOM_TYPES)}."
                    )
        return None

    def _check_list(self, contact: dict[str, Any]) -> None:
        list_id = contact.get("_autopilot_list")
        if list_id is not None and list_id not in self.lists:
            raise _error(404, "Not Found", f"List {list_id} could not be found.")

    def _store(self, contact: dict[str, Any], *, join_list: bool) -> str:
        address = str(contact["Email"]).strip()
        key = address.lower()
        self._version += 1
        self.upsert_counts[key] += 1
        stored = self.contacts.get(key)
        if stored is None:
            stored = {"contact_id": _contact_id(key)}
            self.contacts[key] = stored
            self._ids[stored["contact_id"]] = key
        for name, value in contact.items():
            if name in SPECIAL_KEYS:
                continue
            if name == "custom" and isinstance(value, dict):
                stored.setdefault("custom", {}).update(value)
            else:
                stored[name] = value
        list_id = contact.get("_autopilot_list")
        if join_list and isinstance(list_id, str):
            self.list_members[list_id].add(key)
        return str(stored["contact_id"])

    def _post_contact(self, body: Any) -> _Reply:
        contact = body.get("contact") if isinstance(body, dict) else None
        problem = self._problem(contact, None)
        if problem:
            raise _error(400, "Bad Request", problem)
        assert isinstance(contact, dict)
        self._check_list(contact)
        return _Reply(200, {"contact_id": self._store(contact, join_list=True)})

    def _post_contacts(self, body: Any) -> _Reply:
        contacts = body.get("contacts") if isinstance(body, dict) else None
        if not isinstance(contacts, list):
            raise _error(400, "Bad Request", 'The body must be {"contacts": [...]}.')
        if len(contacts) > MAX_BULK:
            raise _error(
                400,
                "Bad Request",
                f"Too many contacts: {len(contacts)}, at most {MAX_BULK} per request.",
            )
        problems = [(i, self._problem(c, i)) for i, c in enumerate(contacts)]
        bad = {i for i, problem in problems if problem}
        if bad and self.bad_contact_mode == "reject":
            first = next(problem for _, problem in problems if problem)
            raise _error(400, "Bad Request", str(first))
        good = [c for i, c in enumerate(contacts) if i not in bad]
        if self.bulk_honours_list:
            for contact in good:
                self._check_list(contact)
        ids: list[str] = []
        email_map: dict[str, str] = {}
        for contact in good:
            contact_id = self._store(contact, join_list=self.bulk_honours_list)
            ids.append(contact_id)
            email_map[str(contact["Email"]).strip().lower()] = contact_id
        return _Reply(200, {"contact_ids": ids, "email_contact_map": email_map})

    def _resolve(self, id_or_email: str) -> str | None:
        key = id_or_email.strip().lower()
        if key in self.contacts:
            return key
        return self._ids.get(id_or_email)

    def _get_contact(self, id_or_email: str) -> _Reply:
        key = self._resolve(id_or_email)
        if key is None:
            raise _error(404, "Not Found", "Contact could not be found.")
        stored = dict(self.contacts[key])
        stored["lists"] = sorted(lid for lid, members in self.list_members.items() if key in members)
        return _Reply(200, stored)

    def _delete_contact(self, id_or_email: str) -> _Reply:
        key = self._resolve(id_or_email)
        if key is None:
            raise _error(404, "Not Found", "Contact could not be found.")
        stored = self.contacts.pop(key)
        self._version += 1
        self._ids.pop(stored["contact_id"], None)
        for members in self.list_members.values():
            members.discard(key)
        return _Reply(200, {})

    def _unsubscribe(self, id_or_email: str) -> _Reply:
        key = self._resolve(id_or_email)
        if key is None:
            raise _error(404, "Not Found", "Contact could not be found.")
        self.contacts[key]["unsubscribed"] = True
        return _Reply(200, {})

    def _page(self, emails: list[str], bookmark: str | None) -> _Reply:
        """A page of 100 in email order; the bookmark is the last contact's id (no email in the URL)."""
        start = 0
        if bookmark is not None:
            after = self._ids.get(bookmark)
            if after is None:
                raise _error(404, "Not Found", "Bookmark could not be found.")
            start = bisect.bisect_right(emails, after)
        page = emails[start : start + self.page_size]
        answer: dict[str, Any] = {
            "contacts": [dict(self.contacts[e]) for e in page],
            "total_contacts": len(emails),
        }
        if start + self.page_size < len(emails):
            answer["bookmark"] = self.contacts[page[-1]]["contact_id"]
        return _Reply(200, answer)

    def _sorted_emails(self, name: str, emails: set[str] | dict[str, Any]) -> list[str]:
        """Sorted once per change, not per page: paging a million members must not sort 10,000 times."""
        stamp = (self._version, len(emails))
        cached = self._sorted.get(name)
        if cached is None or cached[0] != stamp:
            cached = (stamp, sorted(emails))
            self._sorted[name] = cached
        return cached[1]

    def _page_contacts(self, bookmark: str | None) -> _Reply:
        return self._page(self._sorted_emails("", self.contacts), bookmark)

    def _custom_fields(self) -> _Reply:
        seen: dict[str, tuple[str, str]] = {}
        for stored in self.contacts.values():
            for key in stored.get("custom", {}):
                seen.setdefault(key, _custom_field_name(key))
        return _Reply(
            200,
            [{"name": name, "kind": kind, "fieldType": kind} for kind, name in sorted(seen.values())],
        )

    # -- lists -----------------------------------------------------------------------------------

    def _get_lists(self) -> _Reply:
        faults = self.faults
        if faults.stale_lists_next > 0:
            faults.stale_lists_next -= 1
            return _Reply(200, {"lists": []})
        return _Reply(200, {"lists": [{"list_id": lid, "title": title} for lid, title in self.lists.items()]})

    def _post_list(self, body: Any) -> _Reply:
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise _error(400, "Bad Request", "A list needs a name.")
        if self.duplicate_list_mode == "conflict" and name in self.lists.values():
            raise _coded(409, "Conflict", f"A list named '{name}' already exists.")
        return _Reply(200, {"list_id": self.create_list(name)})

    def _known_list(self, list_id: str) -> set[str]:
        if list_id not in self.lists:
            raise _error(404, "Not Found", "List could not be found.")
        return self.list_members[list_id]

    def _membership(self, method: str, list_id: str, id_or_email: str) -> _Reply:
        members = self._known_list(list_id)
        key = self._resolve(id_or_email)
        if method == "GET":
            if key is None or key not in members:
                raise _ApiError(404, None)  # an empty 404, as the real API sometimes answers
            return _Reply(200, dict(self.contacts[key]))
        if key is None:
            raise _coded(404, "NotFound", "Contact could not be found.")
        if method == "POST":
            if key in members:
                return _Reply(200, {"not_modified": True})
            self._version += 1
            members.add(key)
            return _Reply(200, {})
        if key not in members:
            raise _coded(404, "NotFound", "Contact is not in this list.")
        self._version += 1
        members.discard(key)
        return _Reply(200, {})

    def _page_list(self, list_id: str, bookmark: str | None) -> _Reply:
        return self._page(self._sorted_emails(list_id, self._known_list(list_id)), bookmark)

    # -- admin -----------------------------------------------------------------------------------

    def handle_admin(self, method: str, path: str, body: bytes) -> _Reply:
        """The separate-process control surface: no key (the server only listens on 127.0.0.1)."""
        try:
            data: Any = json.loads(body) if body else {}
        except ValueError:
            return _Reply(400, {"error": "Bad Request", "message": "The request body is not valid JSON."})
        name = path[len(ADMIN_PREFIX) :].strip("/")
        try:
            if method == "GET" and name == "state":
                return _Reply(200, self.state())
            if method == "POST" and name == "faults":
                if not isinstance(data, dict):
                    raise ValueError("faults must be a JSON object")
                seed = data.pop("seed", None)
                return _Reply(200, asdict(self.set_faults(seed=seed, **data)))
            if method == "POST" and name == "key":
                key = data.get("key") if isinstance(data, dict) else None
                if not isinstance(key, str) or not key:
                    raise ValueError('give {"key": "<new key>"}')
                self.rotate_key(key)
                return _Reply(200, {"rotated": True})
            if method == "POST" and name == "config":
                if not isinstance(data, dict):
                    raise ValueError("config must be a JSON object")
                self.configure(**data)
                return _Reply(200, self.state())
            if method == "POST" and name == "reset":
                self.reset()
                return _Reply(200, {"reset": True})
        except (TypeError, ValueError) as exc:
            return _Reply(400, {"error": "Bad Request", "message": str(exc)})
        return _Reply(404, {"error": "Not Found", "message": f"{method} {path} does not exist."})


class _ParseFailureType:
    pass


_ParseFailure = _ParseFailureType()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    app: LocalAutopilot

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._open_lock:
            if alive:
                self._open.add(conn)
            else:
                self._open.discard(conn)

    def close_connections(self) -> None:
        """End idle keep-alive connections, whose threads would otherwise wait for the next request."""
        with self._open_lock:
            conns = list(self._open)
            self._open.clear()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer (its timeout) is normal here, not worth a traceback.
        log.debug("local Autopilot: connection error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalAutopilot/1"
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections end eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines carry emails in paths; the request log is in memory instead."""

    def _serve(self) -> None:
        arrived = time.monotonic()
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") and length_header is None:
            self._write(_Reply(411, {"error": "Length Required", "message": "Send Content-Length."}))
            self.close_connection = True
            return
        try:
            length = int(length_header or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._write(_Reply(400, {"error": "Bad Request", "message": "Bad Content-Length."}))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        app = self.server.app
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            reply = app.handle_admin(self.command, path, body)
        elif path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            reply = app.handle_api(
                self.command, path[len(API_PREFIX) :], self.headers.get("autopilotapikey"), body, arrived
            )
        else:
            reply = _Reply(404, {"code": "NotFound", "message": f"{self.command} {path} does not exist."})
        if reply.delay > 0:
            time.sleep(reply.delay)
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(reply)

    def _write(self, reply: _Reply) -> None:
        body = b"" if reply.empty else json.dumps(reply.payload, separators=(",", ":")).encode("utf-8")
        phrase = self.responses.get(reply.status, ("",))[0]
        lines = [
            f"HTTP/1.1 {reply.status} {phrase}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            f"Content-Length: {len(body)}",
        ]
        if body:
            lines.append("Content-Type: application/json; charset=utf-8")
        if self.close_connection:
            lines.append("Connection: close")
        lines.extend(f"{name}: {value}" for name, value in reply.headers.items())
        # Status, headers and body in one write: two small writes would meet Nagle and delayed ACKs.
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.autopilot_server", description="Local Autopilot-compatible server."
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key", required=True, help="the API key the server accepts")
    parser.add_argument("--rps", type=float, default=0, help="requests per second per key (0: unlimited)")
    parser.add_argument("--bad-contact-mode", choices=BAD_CONTACT_MODES, default="reject")
    parser.add_argument("--duplicate-list-mode", choices=DUPLICATE_LIST_MODES, default="conflict")
    parser.add_argument(
        "--bulk-ignores-list", action="store_true", help="bulk upserts ignore _autopilot_list"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rps < 0 or not math.isfinite(args.rps):
        parser.error("--rps must be 0 or a positive number")
    server = LocalAutopilot(
        args.key,
        requests_per_second=args.rps or None,
        port=args.port,
        bad_contact_mode=args.bad_contact_mode,
        duplicate_list_mode=args.duplicate_list_mode,
        bulk_honours_list=not args.bulk_ignores_list,
        seed=args.seed,
    )
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with server:
        print(f"AUTOPILOT_BASE_URL={server.base_url}", flush=True)
        while not done.wait(0.5):
            pass
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
