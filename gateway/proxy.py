"""What the gateway believes about a request that came through nginx.

Forwarded headers are only as trustworthy as the peer that sent them: nginx
overwrites X-Forwarded-For/-Proto/-Host and sets X-Forwarded-Prefix, but a
client that reaches a gateway directly could send any of them. So they are
believed from the addresses in ``forwarded_allow_ips`` and ignored otherwise
(the rule gunicorn and uvicorn apply with the same setting name). And the Host
an absolute-form request-target names (RFC 9112 §3.2.2), the other way a request
says which host it is for. Pure functions.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Parsing an address costs more than the rest of the forwarded-header handling
# together (ipaddress is pure Python: 7 us each on the loaded lab machine, twice
# per proxied request), and the values repeat: one nginx peer, a few clients.
# So the pure parses below are memoized, in bounded caches.
_CACHE_SIZE: Final = 1024


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _address(text: str) -> IPAddress | None:
    """``text`` as an IP address, or None when it is not one (pure, memoized)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# A mount point: "/" followed by path segments of safe characters, no trailing
# slash, no dot segments.
_PREFIX_RE: Final = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")


# The allow-list entry for connections on a unix socket, which have no address.
UNIX: Final = "unix"


def allow_entries(spec: str) -> list[str]:
    """The entries of an allow-list spec such as ``"unix,127.0.0.1,::1"`` (pure)."""
    return [s.strip() for s in spec.split(",") if s.strip()]


def ip_entries(spec: str) -> str:
    """The spec without ``unix``: what gunicorn's ``forwarded_allow_ips`` takes.

    gunicorn itself believes every unix-socket peer ("Connections not associated
    with an IP address are treated as allowed, unconditionally", its settings
    docs), as uvicorn does; the gateway layer asks for ``unix`` explicitly.
    """
    return ",".join(e for e in allow_entries(spec) if e != UNIX)


@dataclass(frozen=True)
class AllowList:
    networks: tuple[IPNetwork, ...]
    any_peer: bool = False
    # Believe connections on a unix socket: the socket's directory decides who
    # may connect (natively: the lab's own user, as nginx runs).
    unix: bool = False
    # Peers already decided (a cache, not part of the value).
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> AllowList:
        """``"unix,127.0.0.1,::1"``, ``"172.28.0.0/24"`` or ``"*"``."""
        items = allow_entries(spec)
        if "*" in items:
            return cls((), any_peer=True)
        try:
            networks = tuple(ipaddress.ip_network(s, strict=False) for s in items if s != UNIX)
        except ValueError as exc:
            raise ValueError(f"forwarded_allow_ips: {exc}") from None
        return cls(networks, unix=UNIX in items)

    def trusts(self, peer: str | None) -> bool:
        """``peer``: the connection's address, "" or None for a unix socket.

        Both servers give a unix-socket peer no address: gunicorn's WSGI
        workers set REMOTE_ADDR to "" and its ASGI worker, like uvicorn, leaves
        the scope's ``client`` None (ASGI HTTP scope: "client ... Optional").
        """
        if self.any_peer:
            return True
        if not peer:
            return self.unix
        if (known := self._seen.get(peer)) is not None:
            return known
        addr = _address(peer)
        # None: a unix socket path or a name, not an address we know.
        trusted = addr is not None and any(addr in net for net in self.networks)
        if len(self._seen) >= _CACHE_SIZE:
            self._seen.clear()
        self._seen[peer] = trusted
        return trusted


def split_mount(path: str, prefix: str | None) -> tuple[str, str] | None:
    """Split ``path`` at the mount point ``prefix`` into (SCRIPT_NAME, PATH_INFO).

    PEP 3333 / RFC 3875 §4.1.13: SCRIPT_NAME is the leading part of the path
    that identifies the application; PATH_INFO the rest (§4.1.5). The prefix
    must match whole segments: "/wsgi" mounts "/wsgi" and "/wsgi/x", not
    "/wsgix". None when ``prefix`` is absent, malformed or does not apply.
    """
    if not prefix or not _valid_prefix(prefix):
        return None
    if path == prefix or path.startswith(prefix + "/"):
        return prefix, path[len(prefix) :]
    return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _valid_prefix(prefix: str) -> bool:
    return _PREFIX_RE.fullmatch(prefix) is not None and "/../" not in prefix + "/"


def client_address(forwarded_for: str | None) -> str | None:
    """The client's address from X-Forwarded-For as nginx sends it.

    nginx sets the header to ``$remote_addr`` (overwriting, not appending), so
    the last entry is the address nginx saw; take it only if it is an address.
    """
    if not forwarded_for:
        return None
    return _canonical(forwarded_for.rsplit(",", 1)[-1].strip())


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _canonical(text: str) -> str | None:
    addr = _address(text)
    return None if addr is None else str(addr)


def scheme_from(proto: str | None) -> str | None:
    """``http`` or ``https`` from X-Forwarded-Proto; anything else is ignored."""
    value = (proto or "").strip().lower()
    return value if value in ("http", "https") else None


# -- the Host an absolute-form request-target names ------------------------------------
#
# The Host a request names, when its request-target is in absolute form: one rule.
#
# RFC 9112 §3.2.2: "When a proxy receives a request with an absolute-form of
# request-target, the proxy MUST ignore the received Host header field (if any)
# and instead replace it with the host information of the request-target." and
# §3.2: a server MUST accept the absolute-form. Through nginx this is nginx's
# job (nginx/templates/server.conf passes the target's authority as Host); a
# client that talks to a gateway directly ("GET http://a.test:81/env HTTP/1.1")
# gets the same from the gateway layer, whatever the server: the WSGI layer reads
# the raw target from gunicorn's RAW_URI, the ASGI layer from the scope's path
# (gunicorn's asyncio worker leaves the absolute form there), and uvicorn's
# protocol, whose parser keeps only the path, applies it before the scope is made
# (gateway/servers/uvicorn.py). Pure functions.

_SCHEMES: Final = ("http://", "https://")


def target_authority(target: str) -> str | None:
    """The authority of an absolute-form request-target, else None.

    ``"http://a.test:81/env?q"`` -> ``"a.test:81"``; ``"/env"`` -> None. The
    authority ends at the first "/", "?" or "#" (RFC 3986 §3.2); an empty one
    (``"http:///x"``) names no host and is None too.
    """
    lowered = target[:8].lower()
    scheme = next((s for s in _SCHEMES if lowered.startswith(s)), None)
    if scheme is None:
        return None
    rest = target[len(scheme) :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    return rest[:end] or None


def origin_path(target: str) -> str:
    """The path of a request-target in absolute form, as origin-form would give it.

    ``"http://a.test/env"`` -> ``"/env"``, ``"http://a.test"`` -> ``"/"`` (RFC
    9112 §3.2.1: an empty path is sent as "/"); an origin-form path is returned
    as it is. Only the path: a query stays wherever the server put it.
    """
    if target_authority(target) is None:
        return target
    rest = target.split("://", 1)[1]
    start = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    path = rest[start:].split("?", 1)[0].split("#", 1)[0]
    return path or "/"


def request_host(target: str, host: str | None, http_version: str) -> str | None:
    """The Host the app should see: the target's authority in absolute form, else ``host``.

    An HTTP/1.1 request without a Host header keeps None, absolute form or not:
    RFC 9112 §3.2 still requires the header of every HTTP/1.1 request, and the
    gateway refuses it (gateway.preflight). In HTTP/1.0 Host is optional and the
    target's authority is all there is.
    """
    authority = target_authority(target)
    if authority is None or (host is None and http_version == "1.1"):
        return host
    return authority
