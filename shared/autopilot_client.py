"""The Autopilot REST client: bulk upserts that never lose a contact, paced to the connection's limit.

Autopilot's API is partly undocumented where it matters most (specs/autopilot-api.md): what a bulk
request does with one bad contact, whether the bulk endpoint honours ``_autopilot_list``, what the
rate limit really is. The client is built for the uncertain case:

* a 200 is not proof: the emails in ``email_contact_map`` are compared with those sent, and the
  missing ones are retried singly;
* a bulk request refused with 400 is split in halves until the refused contact(s) are isolated, so
  one bad address costs that address only;
* list membership is spot-checked after every bulk request and repaired contact by contact when the
  bulk endpoint ignored ``_autopilot_list``;
* every request is paced by a :class:`~shared.rate_limit.RateLimiter`, and 429, 5xx, timeouts and
  dropped connections are retried with exponential backoff and full jitter (``Retry-After`` wins);
  a 429 pauses the whole limiter, so every caller sharing the connection slows down;
* a 401 re-reads the key once (it may have been regenerated and stored again in Key Vault).

Nothing here logs or raises with a key or an email address in clear (shared/redact.py).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from shared.rate_limit import Pacer, RateLimiter
from shared.redact import email_hash, scrub

log = logging.getLogger(__name__)

MAX_BULK_CONTACTS = 100
"""Autopilot refuses a ``POST /contacts`` of more than 100 contacts with 400."""

MAX_RETRY_AFTER_SECONDS = 300.0
"""A sanity ceiling on a server's ``Retry-After``: a typo there must not stall an export for a day."""

API_KEY_HEADER = "autopilotapikey"


class ApiKeySource(Protocol):
    """Where a connection's API key comes from (Key Vault in Azure, a variable or a constant locally)."""

    def get_key(self) -> str:
        """The key, possibly cached."""
        ...

    def refresh_key(self) -> str:
        """Read the key again now, bypassing any cache: called once after a 401 (key rotation)."""
        ...


@dataclass
class ClientStats:
    """Counters of what talking to Autopilot cost; shared by threads, so every update takes the lock.

    The keys of :meth:`snapshot` are the ones the run report sums (shared.report.STAT_KEYS).
    """

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    bisections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


@dataclass(frozen=True)
class RejectedContact:
    """A contact Autopilot refused; ``reason`` is the server's message with emails and keys masked."""

    email: str
    reason: str


@dataclass(frozen=True)
class UpsertOutcome:
    """What one :meth:`AutopilotClient.upsert_contacts` call achieved.

    ``uploaded + len(rejected)`` equals the number of contacts given: nothing is dropped silently.
    ``membership_added`` counts contacts added to the list one by one because a bulk request did not
    put them there.
    """

    uploaded: int
    rejected: tuple[RejectedContact, ...]
    membership_added: int


class AutopilotError(Exception):
    """Autopilot answered with an error that retrying did not (or cannot) fix.

    ``status_code`` is the last HTTP status, or None when the last attempt got no answer at all.
    The message never contains the key or an email address.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AutopilotAuthError(AutopilotError):
    """The key was refused, also after reading it again: only a person can fix this."""


class _ScrubEmails(logging.Filter):
    """Masks emails in httpx's request log lines: membership URLs name contacts (``.../contact/<email>``)."""

    marker = "segment-export-scrub"

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def _install_httpx_log_scrubbing() -> None:
    logger = logging.getLogger("httpx")
    if not any(getattr(f, "marker", None) == _ScrubEmails.marker for f in logger.filters):
        logger.addFilter(_ScrubEmails())


_install_httpx_log_scrubbing()

_shared_client: httpx.Client | None = None
_shared_client_lock = threading.Lock()


def shared_http_client(timeout: float = 30.0) -> httpx.Client:
    """The process's one pooled HTTP client.

    Activities build an :class:`AutopilotClient` per call; sharing the connection pool keeps the TLS
    handshakes and sockets across calls instead of opening new ones for every batch. The first
    caller's timeout becomes the default; :class:`AutopilotClient` passes its own per request anyway.
    """
    global _shared_client
    with _shared_client_lock:
        if _shared_client is None or _shared_client.is_closed:
            _shared_client = httpx.Client(
                timeout=timeout,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                follow_redirects=False,
            )
        return _shared_client


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date), None if unusable.

    Not documented for Autopilot, but honoured when present: a server that says when to come back
    knows better than any backoff formula.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def error_message(response: httpx.Response) -> str:
    """The server's reason from any of Autopilot's error shapes; never fails on an odd body.

    Seen: ``{"error": ..., "message": ...}``, ``{"code": ..., "message": ...}`` and empty bodies.
    """
    data: Any = None
    try:
        if response.content:
            data = response.json()
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        label = data.get("error") or data.get("code")
        message = data.get("message")
        parts = [str(part) for part in (label, message) if part not in (None, "")]
        if parts:
            return ": ".join(parts)
    elif isinstance(data, str) and data:
        return data
    text = response.text.strip() if response.content and data is None else ""
    if text:
        return text[:300]
    return response.reason_phrase or f"HTTP {response.status_code}"


def _email_of(contact: Mapping[str, Any]) -> str:
    value = contact.get("Email")
    return value if isinstance(value, str) else ""


def _norm(address: str) -> str:
    return address.strip().lower()


def _path_part(value: str) -> str:
    # '@' stays readable; '/', '?', '#', '+', '%' and spaces in an address must not change the path.
    return quote(value, safe="@")


@dataclass
class _Answer:
    status: int
    data: Any
    message: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _Unsure(Exception):
    """A non-idempotent request got no clear answer (5xx, dropped): it may or may not have happened."""


@dataclass
class _Tally:
    uploaded: int = 0
    rejected: list[RejectedContact] = field(default_factory=list)
    membership_added: int = 0


class MembershipChecks:
    """What this process has learnt about each list: does the bulk endpoint honour ``_autopilot_list``?

    Shared by every client in the process (activities build one client per batch), so the checks
    are paid once per list and process, not once per batch.
    """

    CONFIRMATIONS_NEEDED = 3
    SAMPLE_RATE = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._confirmed: dict[str, int] = {}
        self._refuted: set[str] = set()

    def should_check(self, list_id: str, draw: float) -> bool:
        """Check until confirmed a few times, then a 2% sample (about one request in fifty)."""
        with self._lock:
            return self._confirmed.get(list_id, 0) < self.CONFIRMATIONS_NEEDED or draw < self.SAMPLE_RATE

    def confirm(self, list_id: str) -> None:
        with self._lock:
            self._confirmed[list_id] = self._confirmed.get(list_id, 0) + 1

    def confirmations(self, list_id: str) -> int:
        with self._lock:
            return self._confirmed.get(list_id, 0)

    def refute(self, list_id: str) -> bool:
        """Record a failed check; True when earlier checks of this list had passed (an inconsistency)."""
        with self._lock:
            self._refuted.add(list_id)
            return self._confirmed.get(list_id, 0) > 0

    def refuted(self, list_id: str) -> bool:
        with self._lock:
            return list_id in self._refuted

    def reset(self) -> None:
        with self._lock:
            self._confirmed.clear()
            self._refuted.clear()


MEMBERSHIP = MembershipChecks()


class AutopilotClient:
    """One Autopilot connection: its key, its pace, its retries. Safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        key_source: ApiKeySource,
        *,
        connection_name: str,
        requests_per_second: float | None = 5.0,
        rate_limiter: Pacer | None = None,
        timeout: float = 30.0,
        max_retries: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        http: httpx.Client | None = None,
        stats: ClientStats | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._keys = key_source
        self.connection_name = connection_name
        self.rate_limiter: Pacer = rate_limiter or RateLimiter(requests_per_second, sleep=sleep)
        self._timeout = timeout
        self._max_retries = max(0, max_retries)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._http = http or shared_http_client(timeout)
        self.stats = stats or ClientStats()
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._sleep = sleep
        self._key_lock = threading.Lock()
        self._key: str | None = None
        self._refreshed = False  # the current key came from refresh_key() and has not worked yet
        self._lists: dict[str, str] = {}
        self._lists_lock = threading.Lock()
        self._bulk_honours_list: bool | None = None  # learnt from the first membership spot-check

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release: the HTTP pool is the process's (or the caller's) and outlives a client."""

    def __enter__(self) -> AutopilotClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lists -----------------------------------------------------------------------------------

    def find_or_create_list(self, title: str) -> str:
        """The id of the list with exactly this title, creating it only if none exists.

        Lists cannot be deleted through the API, so a duplicate is permanent: the title is looked up
        before every create attempt, a 409 means "someone created it meanwhile, look again", and a
        create that got no clear answer is not blindly repeated but followed by another lookup.
        """
        with self._lists_lock:
            cached = self._lists.get(title)
        if cached:
            return cached
        for attempt in range(self._max_retries + 1):
            found = self._find_list(title) or self._create_list(title, attempt)
            if found:
                with self._lists_lock:
                    self._lists[title] = found
                return found
        raise AutopilotError(
            f"Autopilot list could not be found or created on connection '{self.connection_name}' "
            f"after {self._max_retries + 1} attempts"
        )

    def _create_list(self, title: str, attempt: int) -> str | None:
        """The new list's id, or None when the caller should look the title up again."""
        try:
            answer = self._request("POST", "/list", {"name": title}, idempotent=False)
        except _Unsure as exc:
            log.warning("creating an Autopilot list got no clear answer (%s); looking it up again", exc)
            self._sleep(self._backoff(attempt))
            return None
        if answer.ok and isinstance(answer.data, Mapping) and answer.data.get("list_id"):
            list_id = str(answer.data["list_id"])
            log.info("created Autopilot list %s", list_id)
            return list_id
        if answer.status == 409:
            log.info("Autopilot list exists already (409); looking it up again")
            if attempt:
                self._sleep(self._backoff(attempt))
            return None
        raise self._error("POST", "/list", answer)

    def _find_list(self, title: str) -> str | None:
        answer = self._request("GET", "/lists")
        if not answer.ok:
            raise self._error("GET", "/lists", answer)
        lists = answer.data.get("lists") if isinstance(answer.data, Mapping) else None
        for item in lists or []:
            if isinstance(item, Mapping) and item.get("title") == title and item.get("list_id"):
                return str(item["list_id"])
        return None

    def list_member_emails(self, list_id: str) -> Iterator[str]:
        """Every member's email, paging 100 at a time with the server's bookmark."""
        path = f"/list/{_path_part(list_id)}/contacts"
        seen: set[str] = set()
        while True:
            answer = self._request("GET", path)
            if not answer.ok:
                raise self._error("GET", path, answer)
            data = answer.data if isinstance(answer.data, Mapping) else {}
            contacts = data.get("contacts") or []
            for contact in contacts:
                if isinstance(contact, Mapping):
                    address = contact.get("Email") or contact.get("email")
                    if isinstance(address, str) and address:
                        yield address
            bookmark = data.get("bookmark")
            if not contacts or not isinstance(bookmark, str) or not bookmark or bookmark in seen:
                return
            seen.add(bookmark)
            path = f"/list/{_path_part(list_id)}/contacts/{_path_part(bookmark)}"

    # -- contacts --------------------------------------------------------------------------------

    def upsert_contacts(self, contacts: Sequence[Mapping[str, Any]], list_id: str | None) -> UpsertOutcome:
        """Upsert any number of contacts (and make them members of ``list_id``); account for each.

        The dicts are sent as given, plus ``_autopilot_list``: in particular ``unsubscribed`` is sent
        only when the caller put it there (a default ``false`` would re-subscribe people).
        """
        tally = _Tally()
        prepared: list[dict[str, Any]] = []
        for contact in contacts:
            item = dict(contact)
            if list_id:
                item["_autopilot_list"] = list_id
            prepared.append(item)
        for start in range(0, len(prepared), MAX_BULK_CONTACTS):
            self._upsert_bulk(prepared[start : start + MAX_BULK_CONTACTS], list_id, tally)
        return UpsertOutcome(
            uploaded=tally.uploaded, rejected=tuple(tally.rejected), membership_added=tally.membership_added
        )

    def _upsert_bulk(self, chunk: list[dict[str, Any]], list_id: str | None, tally: _Tally) -> None:
        answer = self._request("POST", "/contacts", {"contacts": chunk})
        if answer.status == 400:
            if len(chunk) == 1:
                self._reject(chunk[0], answer.message, tally)
                return
            # Refused whole: split until the refused contacts stand alone (log2(100) ≈ 7 levels).
            self.stats.add("bisections")
            half = len(chunk) // 2
            log.info("Autopilot refused a bulk of %d contacts (%s); splitting it", len(chunk), answer.message)
            self._upsert_bulk(chunk[:half], list_id, tally)
            self._upsert_bulk(chunk[half:], list_id, tally)
            return
        if not answer.ok:
            raise self._error("POST", "/contacts", answer)
        confirmed_emails = self._confirmed(answer.data, chunk)
        confirmed = [c for c in chunk if _norm(_email_of(c)) in confirmed_emails]
        missing = [c for c in chunk if _norm(_email_of(c)) not in confirmed_emails]
        tally.uploaded += len(confirmed)
        if list_id and confirmed:
            tally.membership_added += self._ensure_members(list_id, confirmed)
        if missing:
            log.info("bulk answer lacks %d of %d contacts; sending them singly", len(missing), len(chunk))
        for contact in missing:
            self._upsert_single(contact, tally)

    @staticmethod
    def _confirmed(data: Any, chunk: list[dict[str, Any]]) -> set[str]:
        """Lower-cased emails the bulk answer vouches for; without a map, only a full id count will do."""
        if isinstance(data, Mapping):
            mapping = data.get("email_contact_map")
            if isinstance(mapping, Mapping):
                return {_norm(str(key)) for key in mapping}
            ids = data.get("contact_ids")
            if isinstance(ids, list) and len(ids) == len(chunk):
                return {_norm(_email_of(c)) for c in chunk}
        return set()

    def _upsert_single(self, contact: dict[str, Any], tally: _Tally) -> None:
        # The single endpoint documents _autopilot_list, so membership comes with the upsert.
        answer = self._request("POST", "/contact", {"contact": contact})
        if answer.ok:
            tally.uploaded += 1
        elif answer.status == 400:
            self._reject(contact, answer.message, tally)
        else:
            raise self._error("POST", "/contact", answer)

    def _reject(self, contact: Mapping[str, Any], message: str, tally: _Tally) -> None:
        address = _email_of(contact)
        reason = message or "refused by Autopilot"
        log.info("Autopilot refused contact %s: %s", email_hash(address), reason)
        tally.rejected.append(RejectedContact(email=address, reason=reason))

    def _ensure_members(self, list_id: str, contacts: list[dict[str, Any]]) -> int:
        """Make the contacts of one successful bulk request members of the list; count the repairs.

        Whether the bulk endpoint honours ``_autopilot_list`` is undocumented. Checking every bulk
        request would double the request count (and halve the speed under the rate limit), so the
        process checks each list's first few bulk requests and then a small sample; once a check
        fails, every client of this process adds that list's members directly.
        """
        list_part = _path_part(list_id)
        if self._bulk_honours_list is not False and MEMBERSHIP.refuted(list_id):
            self._bulk_honours_list = False
        if self._bulk_honours_list is not False:
            with self._rng_lock:
                draw = self._rng.random()
            if not MEMBERSHIP.should_check(list_id, draw):
                return 0
            probe = _path_part(_norm(_email_of(contacts[0])))
            path = f"/list/{list_part}/contact/{probe}"
            answer = self._request("GET", path)
            if answer.ok:
                self._bulk_honours_list = True
                MEMBERSHIP.confirm(list_id)
                return 0
            if answer.status != 404:
                raise self._error("GET", path, answer)
            if MEMBERSHIP.refute(list_id):
                log.warning(
                    "bulk upsert ignored _autopilot_list for list %s after %d confirmed checks: contacts of "
                    "unchecked bulk requests may be missing from the list",
                    list_id,
                    MEMBERSHIP.confirmations(list_id),
                )
            else:
                log.warning("bulk upsert ignored _autopilot_list; adding the contacts to the list singly")
            self._bulk_honours_list = False
        added = 0
        for contact in contacts:
            path = f"/list/{list_part}/contact/{_path_part(_norm(_email_of(contact)))}"
            answer = self._request("POST", path)
            if not answer.ok:  # {"not_modified": true} is a 200 too: already a member is fine
                raise self._error("POST", path, answer)
            added += 1
        return added

    # -- transport -------------------------------------------------------------------------------

    def _current_key(self) -> str:
        with self._key_lock:
            if self._key is None:
                self._key = self._keys.get_key()
            return self._key

    def _after_unauthorized(self, used_key: str) -> bool:
        """After a 401: True to retry with a fresh key, False when the fresh key was refused too."""
        with self._key_lock:
            if self._key is not None and self._key != used_key:
                return True  # another thread refreshed it meanwhile
            if self._refreshed:
                return False
            log.warning("Autopilot refused the key of connection '%s'; re-reading it", self.connection_name)
            self._key = self._keys.refresh_key()
            self._refreshed = True
            return True

    def _key_worked(self, used_key: str) -> None:
        if self._refreshed:
            with self._key_lock:
                if self._key == used_key:
                    self._refreshed = False  # a later rotation may refresh again

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)] spreads retrying workers apart."""
        ceiling = min(self._backoff_cap, self._backoff_base * (2.0 ** min(attempt, 62)))
        with self._rng_lock:
            return self._rng.uniform(0.0, max(0.0, ceiling))

    def _secrets(self) -> tuple[str, ...]:
        with self._key_lock:
            return (self._key,) if self._key else ()

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, idempotent: bool = True
    ) -> _Answer:
        """Send one request, retrying what is worth retrying; returns any other answer to the caller.

        401 → one key refresh; 429 → pause the shared limiter (Retry-After or backoff); 5xx, timeouts
        and dropped connections → backoff. When ``idempotent`` is False, a 5xx or lost answer raises
        :class:`_Unsure` instead of repeating a request that may have taken effect.
        """
        url = self._base_url + path
        shown = scrub(path)
        attempt = 0
        auth_retries = 0
        status: int | None
        retry_after: float | None
        reason: str
        while True:
            self.rate_limiter.acquire()
            key = self._current_key()
            self.stats.add("requests")
            try:
                response = self._http.request(
                    method,
                    url,
                    json=body,
                    headers={API_KEY_HEADER: key, "Accept": "application/json"},
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                self.stats.add("transport_errors")
                reason = scrub(f"{type(exc).__name__}: {exc}", key)
                if not idempotent:
                    raise _Unsure(reason) from None
                log.debug("Autopilot %s %s: no answer (%s)", method, shown, reason)
                wait = self._backoff(attempt)
                status = None
                retry_after = None
            else:
                status = response.status_code
                log.debug("Autopilot %s %s -> %d", method, shown, status)
                if status == 401:
                    auth_retries += 1
                    if auth_retries <= 2 and self._after_unauthorized(key):
                        continue
                    raise AutopilotAuthError(
                        f"Autopilot rejected the API key of connection '{self.connection_name}' (HTTP 401, "
                        "also after reading the key again). Check the key in Autopilot (it may have been "
                        "regenerated) and store the current one in the connection's Key Vault secret.",
                        status_code=401,
                    )
                if status == 429 or status >= 500:
                    reason = scrub(error_message(response), key)
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    wait = retry_after if retry_after is not None else self._backoff(attempt)
                    if status == 429:
                        self.stats.add("throttled")
                    else:
                        self.stats.add("server_errors")
                        if not idempotent:
                            raise _Unsure(f"HTTP {status}: {reason}")
                else:
                    self._key_worked(key)
                    return _Answer(status, self._json(response), scrub(error_message(response), key))
            if attempt >= self._max_retries:
                outcome = f"HTTP {status}" if status else "no answer"
                raise AutopilotError(
                    f"Autopilot {method} {shown} failed after {attempt + 1} attempts on connection "
                    f"'{self.connection_name}': {outcome} ({reason})",
                    status_code=status,
                )
            attempt += 1
            self.stats.add("retries")
            log.info(
                "Autopilot %s %s: %s (%s); retry %d of %d in %.2f s%s",
                method,
                shown,
                f"HTTP {status}" if status else "no answer",
                reason,
                attempt,
                self._max_retries,
                wait,
                " (Retry-After)" if retry_after is not None else "",
            )
            if status == 429:
                self.rate_limiter.pause_for(wait)  # everyone sharing the connection backs off
            else:
                self._sleep(wait)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def _error(self, method: str, path: str, answer: _Answer) -> AutopilotError:
        return AutopilotError(
            f"Autopilot {method} {scrub(path)} answered HTTP {answer.status} on connection "
            f"'{self.connection_name}': {scrub(answer.message, *self._secrets())}",
            status_code=answer.status,
        )
