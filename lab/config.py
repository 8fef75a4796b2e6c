"""What the host-side tools need to know about a lab: where it runs and its limits.

One ``LabConfig`` built from ``LAB_*`` environment variables; the native and
docker targets, the nginx renderer and the tests all read it from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

MODES: Final = ("cgi", "wsgi", "asgi")
ROOT: Final = Path(__file__).resolve().parent.parent


def gateway_ports(nginx_port: int) -> dict[str, int]:
    """Native gateways listen just above nginx: 8080 -> cgi 8081, wsgi 8082, asgi 8083.

    Deriving them from LAB_PORT lets two native labs share a machine.
    """
    return {mode: nginx_port + 1 + i for i, mode in enumerate(MODES)}


@dataclass(frozen=True)
class Limits:
    """Limits in force, reported by ``lab status --json`` and rendered into nginx."""

    proxy_read_timeout_s: int = 30
    client_max_body_bytes: int = 16 * 1024 * 1024
    cgi_max_scripts: int = 16

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] | None = None) -> Limits:
        e = os.environ if env is None else env
        return cls(
            proxy_read_timeout_s=int(e.get("LAB_PROXY_READ_TIMEOUT_S", cls.proxy_read_timeout_s)),
            client_max_body_bytes=int(
                e.get("LAB_CLIENT_MAX_BODY_BYTES", cls.client_max_body_bytes)
            ),
            cgi_max_scripts=int(e.get("LAB_CGI_MAX_SCRIPTS", cls.cgi_max_scripts)),
        )


@dataclass(frozen=True)
class LabConfig:
    port: int = 8080
    state_dir: Path = ROOT / ".lab"
    limits: Limits = field(default_factory=Limits)
    tls_port: int = 8443  # LAB_TLS_PORT: nginx's TLS + HTTP/2 listener on 127.0.0.1

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def tls_dir(self) -> Path:
        """The lab's CA and nginx's certificate (nginx/make-certs.sh); kept by ``down``."""
        return self.state_dir / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA certificate to trust (curl --cacert, a browser); a host path on every target."""
        return self.tls_dir / "ca.pem"

    @property
    def gateway_ports(self) -> dict[str, int]:
        return gateway_ports(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def from_env(cls) -> LabConfig:
        return cls(
            port=int(os.environ.get("LAB_PORT", "8080")),
            state_dir=Path(os.environ.get("LAB_STATE_DIR", str(ROOT / ".lab"))),
            limits=Limits.from_env(),
            tls_port=int(os.environ.get("LAB_TLS_PORT", "8443")),
        )
