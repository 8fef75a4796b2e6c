"""Steady clients: GETs one after another on a keep-alive connection while the lab
reloads nginx, switches the mode of `/`, scales a gateway or HUPs one.

test_switching, test_scale and test_reload start a few, change the running lab,
stop them and assert that not one request failed. A client retries a GET only
when the connection was lost before any response (see ``SteadyClient.get``);
any HTTP error status, a timeout, or an answer cut short counts as failed.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import requests
import urllib3

Retryable = Callable[[requests.ConnectionError], bool]


def closed_before_response(exc: requests.ConnectionError) -> bool:
    """True when the server closed a reused connection before sending any response."""
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, urllib3.exceptions.ProtocolError) and any(
        isinstance(arg, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError)
        for arg in cause.args
    )


def closed_or_refused(exc: requests.ConnectionError) -> bool:
    """The server closed (or refused) the connection before any byte of an answer.

    urllib3 reports a close before the status line as RemoteDisconnected inside
    ProtocolError ("Connection aborted"), a refused connection as NewConnectionError.
    """
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return True
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        inner = reason.args[1] if len(reason.args) > 1 else None
        return type(inner).__name__ in ("RemoteDisconnected", "ConnectionResetError")
    return False


def header(name: str) -> Callable[[requests.Response], str]:
    """Count answers by the value of one response header ("?" where it is missing)."""
    return lambda r: r.headers.get(name, "?")


@dataclass
class SteadyClient:
    """Sequential GETs of ``urls`` in turn, on one keep-alive session, until stopped.

    Bounded: at most ``max_seconds``, and ``max_requests`` when given. Each 200
    answer is counted in ``seen`` under ``key(answer)`` (by default the mode
    that served it); anything else goes to ``failed``.
    """

    urls: Sequence[str]
    key: Callable[[requests.Response], str] = header("X-Gateway-Mode")
    max_seconds: float = 60.0
    max_requests: int | None = None
    retries: int = 1
    retryable: Retryable = closed_before_response
    sent: int = 0
    retried: int = 0
    failed: list[str] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def get(self, session: requests.Session, url: str) -> requests.Response:
        for _ in range(self.retries):
            try:
                return session.get(url, timeout=10)
            except requests.ConnectionError as exc:
                # A graceful reload closes idle keep-alive connections to clients; a
                # request sent on one at that instant gets no response at all. RFC 9112
                # §9.3.1: "When an inbound connection is closed prematurely, a client
                # MAY open a new connection and automatically retransmit an aborted
                # sequence of requests if all of those requests have idempotent
                # methods" -- which browsers and HTTP libraries do. So this client
                # does it too, for that case only (GET, ``retryable``), at most
                # ``retries`` times. A timeout, a further failure or any HTTP error
                # status is not retried and counts as failed.
                if isinstance(exc, requests.Timeout) or not self.retryable(exc):
                    raise
                self.retried += 1
        return session.get(url, timeout=10)

    def run(self) -> None:
        end = time.monotonic() + self.max_seconds
        limit = self.max_requests
        urls = itertools.cycle(self.urls)
        with requests.Session() as session:
            while not self.stop.is_set() and time.monotonic() < end:
                if limit is not None and self.sent >= limit:
                    break
                url = next(urls)
                self.sent += 1
                try:
                    r = self.get(session, url)
                except requests.RequestException as exc:
                    self.failed.append(f"GET {url}: {type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    self.failed.append(f"GET {url}: HTTP {r.status_code}: {r.text[:200]}")
                else:
                    self.seen[self.key(r)] += 1

    def start(self) -> SteadyClient:
        """Run in a daemon thread of its own; returns the client."""
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread ``start`` began; True once it has ended."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self._thread is None or not self._thread.is_alive()


@dataclass(frozen=True)
class Totals:
    """What a group of steady clients did, once stopped."""

    finished: bool  # every client's thread ended within the join timeout
    sent: int
    retried: int
    failed: list[str]
    seen: Counter[str]


def finish(clients: Iterable[SteadyClient], timeout_s: float = 30.0) -> Totals:
    """Stop every client, wait for each (up to ``timeout_s``), and add up what they did."""
    clients = list(clients)
    for client in clients:
        client.stop.set()
    joined = [client.join(timeout_s) for client in clients]
    return Totals(
        finished=all(joined),
        sent=sum(c.sent for c in clients),
        retried=sum(c.retried for c in clients),
        failed=[f for c in clients for f in c.failed],
        seen=sum((c.seen for c in clients), Counter()),
    )
