"""One fake target for CLI tests: records every call, can fail on demand, can scale,
can swap a mode's server.

It is checked against the real ``Target``, ``ScalableTarget`` and
``ServerTarget`` protocols (tests/unit/lab/test_cli.py, test_lab_server.py), so
the CLI tests talk to the same interface the real targets implement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from lab.errors import LabError
from lab.settings import LabSettings
from lab.targets import StatusDict
from lab.targets.switching import limits_dict


@dataclass
class FakeTarget:
    name: str = "native"
    active_mode: str = "wsgi"
    calls: list[tuple[str, ...]] = field(default_factory=list)
    fail_with: str | None = None
    # What ``status`` reports (a test sets the servers it is about).
    servers: dict[str, str] = field(
        default_factory=lambda: {"cgi": "runner", "wsgi": "sync", "asgi": "gunicorn"}
    )
    gateways: dict[str, str] = field(default_factory=lambda: {"cgi": "http://127.0.0.1:8081"})
    workers: dict[str, int] = field(default_factory=lambda: {"cgi": 1, "wsgi": 5, "asgi": 2})
    replicas: dict[str, int] = field(default_factory=lambda: {"cgi": 1, "wsgi": 3, "asgi": 1})

    def _call(self, *what: str) -> None:
        self.calls.append(what)
        if self.fail_with:
            raise LabError(self.fail_with)

    def up(self, cfg: LabSettings) -> None:
        self._call("up")

    def down(self, cfg: LabSettings) -> None:
        self._call("down")

    def status(self, cfg: LabSettings) -> StatusDict:
        return {
            "target": self.name,
            "url": cfg.url,
            "tls_url": cfg.tls_url,
            "ca_file": str(cfg.ca_file),
            "running": True,
            "active_mode": self.active_mode,
            "gateways": dict(self.gateways),
            "servers": dict(self.servers),
            "limits": limits_dict(cfg),
            "services": {"nginx": True, "gateway-cgi": True},
            "workers": dict(self.workers),
            "replicas": dict(self.replicas),
        }

    def switch(self, cfg: LabSettings, mode: str) -> None:
        self._call("switch", mode)

    def split(self, cfg: LabSettings, weights: Mapping[str, int] | None) -> None:
        self._call("split", str(weights))

    def scale(self, cfg: LabSettings, mode: str, replicas: int) -> None:
        self._call("scale", mode, str(replicas))

    def server(self, cfg: LabSettings, mode: str, server: str) -> None:
        self._call("server", mode, server)

    def logs(self, cfg: LabSettings, follow: bool) -> None:
        self._call("logs", str(follow))

    def is_running(self, cfg: LabSettings) -> bool:
        return True


def use_fake(monkeypatch: pytest.MonkeyPatch, state_dir: str, target: FakeTarget) -> FakeTarget:
    """Make the ``lab`` CLI talk to ``target`` (LAB_TARGET=native, state in ``state_dir``)."""
    from lab import cli

    monkeypatch.setenv("LAB_STATE_DIR", state_dir)
    monkeypatch.setenv("LAB_TARGET", "native")
    monkeypatch.setattr(cli, "get_target", lambda name: target)
    return target
