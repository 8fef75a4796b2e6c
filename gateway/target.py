"""The Host a request names, when its request-target is in absolute form: one rule.

RFC 9112 §3.2.2: "When a proxy receives a request with an absolute-form of
request-target, the proxy MUST ignore the received Host header field (if any)
and instead replace it with the host information of the request-target." and
§3.2: a server MUST accept the absolute-form. Through nginx this is nginx's
job (nginx/templates/server.conf passes the target's authority as Host); a
client that talks to a gateway directly ("GET http://a.test:81/env HTTP/1.1")
gets the same from the gateway layer, whatever the server: the WSGI layer reads
the raw target from gunicorn's RAW_URI, the ASGI layer from the scope's path
(gunicorn's asyncio worker leaves the absolute form there), and uvicorn's
protocol, whose parser keeps only the path, applies it before the scope is made
(gateway/servers/uvicorn.py). Pure functions.
"""

from __future__ import annotations

from typing import Final

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
