"""Every ``LAB_*`` setting the host side reads, in one typed object.

``LabSettings.from_env(env)`` is the only place the lab reads its environment
(nothing is read at import time); the CLI builds it once per command and hands
it to the target, the renderer and the workshop tools. A bad value is a
``SettingsError`` naming the variable and the value. Standard library only: the
renderer's CLI reads the limits through it inside the nginx image.

Every target (native, docker, swarm) honours the same settings. Docker-only knobs that compose.yaml
reads itself (LAB_GATEWAY_CPUS, LAB_GATEWAY_MEMORY, LAB_SUBNET,
LAB_HEALTHCHECK_INTERVAL) are not here; ``.env.example`` marks them so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from lab.errors import LabError
from lab.routing import DEFAULT_MODE, Active, RenderError, gateway_ports, parse_active

ROOT: Final = Path(__file__).resolve().parent.parent
TARGET_NAMES: Final = ("docker", "swarm", "native")


class SettingsError(LabError):
    """A LAB_* variable with a value the lab cannot use; the message names both."""

    exit_code = 2


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    text = env.get(key, "").strip()
    if not text:
        return default
    # ASCII digits only (str.isdigit and int() accept other scripts' digits).
    if not text.isascii() or not text.isdigit() or int(text) < minimum:
        raise SettingsError(f"{key}={text!r}: expected a whole number >= {minimum}")
    return int(text)


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    text = env.get(key, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or not text.isascii():
        raise SettingsError(f"{key}={text!r}: expected a positive number of seconds")
    return value


@dataclass(frozen=True)
class Limits:
    """Limits in force, reported by ``lab status --json`` and rendered into nginx."""

    proxy_read_timeout_s: int = 30
    client_max_body_bytes: int = 16 * 1024 * 1024
    cgi_max_scripts: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        e = os.environ if env is None else env
        return cls(
            proxy_read_timeout_s=_int(e, "LAB_PROXY_READ_TIMEOUT_S", cls.proxy_read_timeout_s, 1),
            client_max_body_bytes=_int(
                e, "LAB_CLIENT_MAX_BODY_BYTES", cls.client_max_body_bytes, 1
            ),
            cgi_max_scripts=_int(e, "LAB_CGI_MAX_SCRIPTS", cls.cgi_max_scripts, 1),
        )


@dataclass(frozen=True)
class LabSettings:
    """The lab as the host side sees it. Defaults agree with compose.yaml and .env.example."""

    port: int = 8080  # LAB_PORT: nginx on 127.0.0.1
    tls_port: int = 8443  # LAB_TLS_PORT: nginx's TLS + HTTP/2 listener on 127.0.0.1
    state_dir: Path = ROOT / ".lab"  # LAB_STATE_DIR: native config, logs, records
    limits: Limits = field(default_factory=Limits)  # LAB_PROXY_READ_TIMEOUT_S, ...
    target: str = ""  # LAB_TARGET: docker|swarm|native; "" = recorded, else docker if it answers
    url_override: str = ""  # LAB_URL: where the workshop tools send load (default: url)
    mode: Active = DEFAULT_MODE  # LAB_MODE: what "/" serves at first start (mode or split)
    gateway_workers: int = 0  # LAB_GATEWAY_WORKERS: 0 = the mode's default
    build_timeout_s: float = 1200.0  # LAB_BUILD_TIMEOUT_S (docker: image builds)
    wait_timeout_s: int = 120  # LAB_WAIT_TIMEOUT_S (docker: healthchecks at start)
    base_image: str = ""  # LAB_BASE_IMAGE (docker): "" = pulled slim image, else built
    ca_bundle: str = ""  # LAB_CA_BUNDLE (docker): a CA file for pip inside the build
    templates: Path = ROOT / "nginx" / "templates"  # LAB_NGINX_TEMPLATES
    image_tag: str = "latest"  # LAB_IMAGE_TAG (docker, swarm): the tag of both lab images
    stack: str = "gateway-lab-swarm"  # LAB_STACK (swarm): the stack's name
    swarm_subnet: str = "172.29.0.0/24"  # LAB_SWARM_SUBNET (swarm): its overlay network
    registry: str = ""  # LAB_REGISTRY (swarm): push images there, so every node can pull

    @property
    def gateway_ports(self) -> dict[str, int]:
        return gateway_ports(self.port)

    @property
    def url(self) -> str:
        """nginx's URL on this machine."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """nginx's TLS (HTTP/2 and HTTP/1.1) URL on this machine."""
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def tls_dir(self) -> Path:
        """The lab's CA and nginx's certificate (nginx/make-certs.sh); ``down`` keeps them."""
        return self.state_dir / "tls"

    @property
    def ca_file(self) -> Path:
        """The native lab's CA certificate to trust (curl --cacert, a browser), beside its key."""
        return self.tls_dir / "ca.pem"

    def ca_file_of(self, target: str) -> Path:
        """The CA certificate to trust on ``target``, a host path on every target.

        The Docker targets' nginx makes its own CA in a volume and the lab copies
        the certificate out, each to a file of its own: over the native
        ``ca.pem`` it would no longer match the native ``ca.key`` beside it.
        """
        return self.ca_file if target == "native" else self.tls_dir / f"{target}-ca.pem"

    @property
    def tools_url(self) -> str:
        """Where bench, timeline and claims send their load: LAB_URL, else ``url``."""
        return self.url_override.rstrip("/") or self.url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LabSettings:
        e = os.environ if env is None else env
        target = e.get("LAB_TARGET", "").strip().lower()
        if target and target not in TARGET_NAMES:
            raise SettingsError(
                f"LAB_TARGET={target!r} is not a target: use one of {', '.join(TARGET_NAMES)}"
            )
        try:
            mode = parse_active(e.get("LAB_MODE", "") or DEFAULT_MODE)
        except RenderError as exc:
            raise SettingsError(f"LAB_MODE={e.get('LAB_MODE')!r}: {exc}") from None
        return cls(
            port=_int(e, "LAB_PORT", cls.port, 1),
            tls_port=_int(e, "LAB_TLS_PORT", cls.tls_port, 1),
            state_dir=Path(e.get("LAB_STATE_DIR", "") or ROOT / ".lab"),
            limits=Limits.from_env(e),
            target=target,
            url_override=e.get("LAB_URL", "").strip(),
            mode=mode,
            gateway_workers=_int(e, "LAB_GATEWAY_WORKERS", cls.gateway_workers),
            build_timeout_s=_float(e, "LAB_BUILD_TIMEOUT_S", cls.build_timeout_s),
            wait_timeout_s=_int(e, "LAB_WAIT_TIMEOUT_S", cls.wait_timeout_s, 1),
            base_image=e.get("LAB_BASE_IMAGE", "").strip(),
            ca_bundle=e.get("LAB_CA_BUNDLE", "").strip(),
            templates=Path(e.get("LAB_NGINX_TEMPLATES", "") or ROOT / "nginx" / "templates"),
            image_tag=e.get("LAB_IMAGE_TAG", "").strip() or cls.image_tag,
            stack=e.get("LAB_STACK", "").strip() or cls.stack,
            swarm_subnet=e.get("LAB_SWARM_SUBNET", "").strip() or cls.swarm_subnet,
            registry=e.get("LAB_REGISTRY", "").strip().rstrip("/"),
        )
