"""Asking GreyNoise: the request rate the operator sets, ``Retry-After``, a daily quota.

One :class:`GreyNoiseClient` serves a run, from any number of threads. Every request
waits its turn under :class:`RateLimit` (never faster than ``rate_per_second``, over
any window). A 429 with ``Retry-After`` up to a minute is waited out and asked again;
a longer one, or a 429 that says the day's allowance is spent, or the client-side
``daily_quota``, stops asking (until then, or the next UTC day) and leaves the rest
pending instead of sleeping. Given the store's ledger (:meth:`GreyNoiseClient.count_in`),
the quota and the server's "spent" count for every process on the database, across
restarts. Other failures (5xx, timeouts, a body that is not the
JSON expected) are retried with backoff, ``retries`` attempts in all; what is still
unanswered stays pending. A refused key (401, 403) is logged as an error and counted
among the run's errors; nothing more is asked for :data:`_REFUSED_HOLD` seconds, since
only the operator can mend it. The community API answers for IPv4 only: an IPv6
address is never sent to it, and its section says nothing (``not_found``, every field
``null``) without spending a request. A sick GreyNoise costs its own sections only, and only
for a bounded time: every request ends within ``timeout`` seconds in all (a server
that drips its answer a byte at a time included), a body over :data:`MAX_BODY` bytes
is refused unread, and after :data:`_BREAKER_FAILURES` failed requests in a row
nothing is asked for a cooldown that doubles while it keeps failing. Answers whose
fields are not of the documented types are not stored as they came: a field of the
wrong type is ``null``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import tenacity

from ... import clock
from ...addresses import Usable, classify
from ..pacing import Breaker, DailyQuota, Ledger, RateLimit
from ..plugin import Lookup
from .answers import COMMUNITY_FIELDS, not_observed, quick, typed

__all__ = ["DailyQuota", "GreyNoiseClient", "RateLimit"]

logger = logging.getLogger(__name__)

#: The longest ``Retry-After`` waited out inside one lookup; longer, the rest is pending.
_LONGEST_WAIT: Final = 60.0
#: The longest a ``Retry-After`` holds every request back.
_LONGEST_HOLD: Final = 86400.0
#: The largest answer read (an enterprise bulk answer of 10,000 profiles is a few MB).
MAX_BODY: Final = 32 * 1024 * 1024
#: Failed requests in a row that open the breaker, and its first and longest cooldown.
_BREAKER_FAILURES: Final = 5
_BREAKER_COOLDOWN: Final = 60.0
_BREAKER_LONGEST: Final = 3600.0
#: Seconds nothing is asked after the key was refused (then one request tries again).
_REFUSED_HOLD: Final = 3600.0
#: 429s with ``Retry-After`` one request waits out before it gives up.
_MOST_WAITS: Final = 10
#: Why a section stays pending once the day's quota is spent.
_SPENT: Final = "GreyNoise daily quota spent; asked again the next UTC day"


class _Stop(Exception):
    """Stop asking in this lookup (quota spent, key refused, a wait too long)."""


class GreyNoiseClient:
    """The GreyNoise source of a run (see the module)."""

    def __init__(
        self,
        *,
        api_url: str,
        api_key: str | None,
        offering: str,
        rate_per_second: float,
        daily_quota: int,
        ttl: dt.timedelta,
        negative_ttl: dt.timedelta,
        timeout: float,
        retries: int,
        bulk_size: int,
        concurrency: int,
    ) -> None:
        self.offering = offering
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.retries = retries
        self.timeout = timeout
        # Community lookups are one request an address at the operator's rate: small
        # calls, so that the sections come back steadily rather than after minutes.
        self.batch_size = bulk_size if offering == "enterprise" else 10
        self.concurrency = concurrency
        self.rate = RateLimit(rate_per_second)
        self.quota = DailyQuota(daily_quota, "GreyNoise")
        self.breaker = Breaker("GreyNoise", _BREAKER_FAILURES, _BREAKER_COOLDOWN, _BREAKER_LONGEST)
        self._refused_lock = threading.Lock()
        self._refused_until = float("-inf")
        self._refused_why = ""
        headers = {"Accept": "application/json", "User-Agent": "cowrie-enrich"}
        if api_key:
            headers["key"] = api_key
        self._http = httpx.Client(base_url=api_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def count_in(self, ledger: Ledger) -> None:
        """Count the daily quota in ``ledger`` (the store's: shared by every process on it)."""
        self.quota.share(ledger)

    def quota_spent(self) -> bool:
        """Whether the day's quota is spent (this process's view, or the fleet's ledger)."""
        return self.quota.spent

    def lookup(self, ips: Sequence[str]) -> Lookup:
        """Ask about ``ips`` (canonical, global only: anything else is never sent)."""
        result = Lookup()
        usable = []
        for ip in ips:
            verdict = classify(ip)
            if not isinstance(verdict, Usable) or verdict.ip != ip:
                result.pending[ip] = "not a canonical global address; never sent"
            elif self.offering == "community" and ":" in ip:
                result.not_found[ip] = dict.fromkeys(COMMUNITY_FIELDS)
            else:
                usable.append(ip)
        try:
            self._check_refused(result)
            if self.offering == "enterprise":
                self._bulk(usable, result)
            else:
                for ip in usable:
                    self._one(ip, result)
        except _Stop as stop:
            for ip in usable:
                if ip not in result.answers and ip not in result.not_found:
                    result.pending.setdefault(ip, str(stop))
        return result

    # -- requests -----------------------------------------------------------------------

    def _request(self, result: Lookup, method: str, url: str, **kwargs: Any) -> _Answer:
        """One request under the rate limit and the quota, retried as the module says.

        :raises _Stop: when asking must stop for now.
        :raises _Failed: when every attempt failed.
        """
        waits = [0]  # 429s waited out, over every attempt of this request
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5.0),
            # Not once the 429s are waited out, nor once the breaker opened.
            retry=tenacity.retry_if_exception(
                lambda exc: type(exc) is _Failed and not self.breaker.is_open
            ),
            sleep=clock.sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, result, waits, method, url, kwargs)
        except _Failed as exc:
            if self.breaker.is_open:
                raise _Stop("GreyNoise keeps failing; asked again later") from exc
            raise

    def _attempt(
        self, result: Lookup, waits: list[int], method: str, url: str, kwargs: dict[str, Any]
    ) -> _Answer:
        """One attempt: a request, and the waits a 429 asks for (which are not failures)."""
        if not self.breaker.allow():
            raise _Stop("GreyNoise keeps failing; asked again later")
        while waits[0] < _MOST_WAITS:
            if not self.rate.wait(max(_LONGEST_WAIT, self.rate.interval)):
                raise _Stop("GreyNoise asked to wait; asked again later")
            if not self.quota.take():
                result.exhausted = _SPENT
                raise _Stop(_SPENT)
            result.requests += 1
            try:
                response = self._send(method, url, **kwargs)
            except (httpx.HTTPError, _TooBig, _TooSlow) as exc:
                self.breaker.failed()
                why = str(exc) if isinstance(exc, _TooBig | _TooSlow) else type(exc).__name__
                raise _Failed(why) from exc
            if response.status_code < 500:
                self.breaker.answered()  # a 429 or a 401 too: the server is alive
            else:
                self.breaker.failed()
                raise _Failed(f"server error {response.status_code}")
            if response.status_code == 429:
                wait = _retry_after(response)
                if _says_quota(response):
                    self.quota.spend()
                    result.exhausted = _SPENT
                    raise _Stop(_SPENT)
                if wait is None:  # a limit that does not say how long: back off
                    wait = min(2.0 ** (waits[0] + 1), _LONGEST_WAIT)
                self.rate.hold_off(wait)
                if wait > _LONGEST_WAIT:
                    raise _Stop(f"GreyNoise asked to wait {wait:.0f}s")
                waits[0] += 1
                continue  # a wait asked for is not a failure: the limiter holds it
            if response.status_code in (401, 403):
                result.refusal = self._refuse(response.status_code)
                raise _Stop(result.refusal)
            return response
        raise _WaitedOut("429 Too Many Requests")

    def _check_refused(self, result: Lookup) -> None:
        """Raise :class:`_Stop` while a refused key holds every request back."""
        with self._refused_lock:
            if clock.monotonic() < self._refused_until:
                result.refusal = self._refused_why
                raise _Stop(self._refused_why)

    def _refuse(self, status: int) -> str:
        """The key was refused: hold requests back, say so once; the pending reason."""
        why = f"GreyNoise refused the key ({status})"
        with self._refused_lock:
            first = clock.monotonic() >= self._refused_until
            self._refused_until = clock.monotonic() + _REFUSED_HOLD
            self._refused_why = why
        if first:
            logger.error(
                "%s: no GreyNoise request for %.0f minutes, its sections stay pending; "
                "check api_key in [plugins.enrich.greynoise] or COWRIE_ENRICH_GREYNOISE_API_KEY "
                "(cowrie-enrich doctor tries the key)",
                why,
                _REFUSED_HOLD / 60,
            )
        return why

    def _send(self, method: str, url: str, **kwargs: Any) -> _Answer:
        """One request, answered whole within ``timeout`` seconds, or :class:`_TooSlow`.

        httpx's own timeout is per read: a server that sends its headers or body a
        byte at a time would hold a request for hours. The request runs on a thread of
        its own, and the lookup waits for it at most ``timeout`` seconds; a request
        left behind ends at its body's deadline or its next read timeout.
        """
        box: list[_Answer | BaseException] = []
        done = threading.Event()

        def request() -> None:
            try:
                box.append(self._read(method, url, **kwargs))
            except BaseException as exc:  # handed to the lookup's thread
                box.append(exc)
            finally:
                done.set()

        threading.Thread(target=request, name="greynoise-request", daemon=True).start()
        if not done.wait(self.timeout + 0.5):
            raise _TooSlow(f"no whole answer within {self.timeout:g}s")
        answer = box[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _read(self, method: str, url: str, **kwargs: Any) -> _Answer:
        """The request, its body read within the deadline and :data:`MAX_BODY` bytes."""
        deadline = time.monotonic() + self.timeout
        with self._http.stream(method, url, **kwargs) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_BODY:
                raise _TooBig(f"an answer of {int(declared)} bytes, over the limit")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise _TooBig("an answer over the size limit")
                if time.monotonic() > deadline:
                    raise _TooSlow(f"no whole answer within {self.timeout:g}s")
            return _Answer(response.status_code, response.headers, bytes(body))

    def _one(self, ip: str, result: Lookup) -> None:
        try:
            response = self._request(result, "GET", f"/v3/community/{ip}")
            body = _json(response)
        except _Failed as exc:
            result.pending[ip] = str(exc)
            return
        if response.status_code == 404:
            result.not_found[ip] = not_observed()
        elif response.status_code == 200 and isinstance(body, dict):
            result.answers[ip] = typed({key: body.get(key) for key in COMMUNITY_FIELDS})
        else:
            result.pending[ip] = f"unexpected answer {response.status_code}"

    def _bulk(self, ips: Sequence[str], result: Lookup) -> None:
        if not ips:
            return
        try:
            response = self._request(
                result, "POST", "/v3/ip", params={"quick": "true"}, json={"ips": list(ips)}
            )
            body = _json(response)
        except _Failed as exc:
            result.pending.update(dict.fromkeys(ips, str(exc)))
            return
        if response.status_code != 200 or not isinstance(body, dict):
            result.pending.update(dict.fromkeys(ips, f"unexpected answer {response.status_code}"))
            return
        asked = set(ips)
        data = body.get("data")
        for item in data if isinstance(data, list) else ():
            if isinstance(item, dict) and isinstance(item.get("ip"), str) and item["ip"] in asked:
                result.answers[item["ip"]] = typed(quick(item))
        metadata = body.get("request_metadata")
        not_found = body.get("ips_not_found") or (
            metadata.get("ips_not_found") if isinstance(metadata, dict) else None
        )
        for ip in not_found if isinstance(not_found, list) else ():
            if isinstance(ip, str) and ip in asked and ip not in result.answers:
                result.not_found[ip] = not_observed()
        for ip in ips:
            if ip not in result.answers and ip not in result.not_found:
                result.pending[ip] = "not in the answer"


@dataclass(frozen=True)
class _Answer:
    """A response read whole (within the request's bounds)."""

    status_code: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Failed(Exception):
    """Every attempt of one request failed."""


class _WaitedOut(_Failed):
    """Every wait a 429 asked for was waited out: not retried (the waits were the retries)."""


class _TooBig(Exception):
    """The answer is larger than :data:`MAX_BODY`."""


class _TooSlow(Exception):
    """The answer did not arrive whole within the request's time."""


def _json(response: _Answer) -> Any:
    try:
        return json.loads(response.body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _Failed("the answer is not JSON") from exc


def _retry_after(response: _Answer) -> float | None:
    """Seconds to wait, from ``Retry-After`` as seconds or as an HTTP date."""
    text = response.headers.get("Retry-After")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:  # a day at most: no header stops asking for the rest of a weeks-long run
        return min(max(0.0, seconds), _LONGEST_HOLD) if math.isfinite(seconds) else _LONGEST_HOLD
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    seconds = (when - dt.datetime.now(dt.timezone.utc)).total_seconds()
    return min(max(0.0, seconds), _LONGEST_HOLD)


def _says_quota(response: _Answer) -> bool:
    text = response.text.lower()
    return "daily" in text or "quota" in text
