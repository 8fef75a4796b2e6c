"""What the gateway believes about a request that came through nginx.

Forwarded headers are only as trustworthy as the peer that sent them: nginx
overwrites X-Forwarded-For/-Proto/-Host and sets X-Forwarded-Prefix, but a
client that reaches a gateway directly could send any of them. So they are
believed from the addresses in ``forwarded_allow_ips`` and ignored otherwise
(the rule gunicorn and uvicorn apply with the same setting name). Pure functions.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A mount point: "/" followed by path segments of safe characters, no trailing
# slash, no dot segments.
_PREFIX_RE: Final = re.compile(r"(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+")


@dataclass(frozen=True)
class AllowList:
    networks: tuple[IPNetwork, ...]
    any_peer: bool = False

    @classmethod
    def parse(cls, spec: str) -> AllowList:
        """``"127.0.0.1,::1"``, ``"172.28.0.0/24"`` or ``"*"``."""
        items = [s.strip() for s in spec.split(",") if s.strip()]
        if "*" in items:
            return cls((), any_peer=True)
        try:
            return cls(tuple(ipaddress.ip_network(s, strict=False) for s in items))
        except ValueError as exc:
            raise ValueError(f"forwarded_allow_ips: {exc}") from None

    def trusts(self, peer: str | None) -> bool:
        if self.any_peer:
            return True
        if not peer:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False  # a unix socket path or a name: not an address we know
        return any(addr in net for net in self.networks)


def split_mount(path: str, prefix: str | None) -> tuple[str, str] | None:
    """Split ``path`` at the mount point ``prefix`` into (SCRIPT_NAME, PATH_INFO).

    PEP 3333 / RFC 3875 §4.1.13: SCRIPT_NAME is the leading part of the path
    that identifies the application; PATH_INFO the rest (§4.1.5). The prefix
    must match whole segments: "/wsgi" mounts "/wsgi" and "/wsgi/x", not
    "/wsgix". None when ``prefix`` is absent, malformed or does not apply.
    """
    if not prefix or not _PREFIX_RE.fullmatch(prefix) or "/../" in prefix + "/":
        return None
    if path == prefix or path.startswith(prefix + "/"):
        return prefix, path[len(prefix) :]
    return None


def client_address(forwarded_for: str | None) -> str | None:
    """The client's address from X-Forwarded-For as nginx sends it.

    nginx sets the header to ``$remote_addr`` (overwriting, not appending), so
    the last entry is the address nginx saw; take it only if it is an address.
    """
    if not forwarded_for:
        return None
    last = forwarded_for.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return None


def scheme_from(proto: str | None) -> str | None:
    """``http`` or ``https`` from X-Forwarded-Proto; anything else is ignored."""
    value = (proto or "").strip().lower()
    return value if value in ("http", "https") else None
