"""The native target's nginx: find (or install) the binary, render and test the
config in ``<state_dir>/nginx/``, and reload a running master safely.

A reload here (``reload_with``) writes one file, runs ``nginx -t``, checks the
master still runs, sends SIGHUP and waits until nginx's workers are all new;
on any failure the previous file is put back, so the file on disk never says
something nginx is not running.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lab.errors import LabError
from lab.nginx import render as nginx_conf
from lab.routing import MODES, Split
from lab.settings import ROOT, LabSettings
from lab.system.processes import tail
from lab.system.procfs import read_proc
from lab.targets.switching import MASTER_TITLE, accepting_workers, wait_for_reload

# Makes the lab's local CA and nginx's certificate; the nginx image runs it too.
MAKE_CERTS: Final = ROOT / "nginx" / "make-certs.sh"
NGINX_CANDIDATES: Final = (
    "/usr/sbin/nginx",
    "/usr/local/sbin/nginx",
    "/usr/local/nginx/sbin/nginx",
)


@dataclass(frozen=True)
class Paths:
    """Where one native lab keeps its files (all under LAB_STATE_DIR)."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "native.json"

    @property
    def nginx_dir(self) -> Path:
        return self.root / "nginx"

    @property
    def conf(self) -> Path:
        return self.nginx_dir / "nginx.conf"

    @property
    def active(self) -> Path:
        return self.nginx_dir / nginx_conf.ACTIVE_FILE

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def nginx_log(self) -> Path:
        return self.logs / "nginx-error.log"

    def service_log(self, service: str) -> Path:
        return self.nginx_log if service == "nginx" else self.logs / f"{service}.log"


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in NGINX_CANDIDATES if os.access(c, os.X_OK)), None)


def ensure_nginx(say: Callable[[str], None]) -> str:
    """The nginx binary; installs Debian's nginx-light with apt-get when there is none."""
    if found := find_nginx():
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise LabError(
            "nginx is not installed: install it with your package manager, "
            "or install Docker and run `make up` (LAB_TARGET=docker)"
        )
    cmd = [apt, "install", "-y", "--no-install-recommends", "nginx-light"]
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise LabError("nginx is not installed: run `sudo apt-get install nginx-light`")
        cmd = ["sudo", *cmd]
    say(f"nginx is not installed; installing it: {' '.join(cmd)}")
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or (found := find_nginx()) is None:
        raise LabError("could not install nginx-light: run `apt-get install nginx-light` yourself")
    return found


def nginx_command(nginx: str, cfg: LabSettings) -> list[str]:
    p = Paths(cfg.state_dir)
    # -p: prefix for relative paths; -c: our config; -e: errors before the
    # config is read go to our log, not the distribution's /var/log/nginx.
    return [nginx, "-p", str(p.nginx_dir), "-c", str(p.conf), "-e", str(p.nginx_log)]


def nginx_test(nginx: str, cfg: LabSettings) -> None:
    proc = subprocess.run(
        [*nginx_command(nginx, cfg), "-t", "-q"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        p = Paths(cfg.state_dir)
        raise LabError(
            f"`nginx -t` rejected the rendered config in {p.nginx_dir}:\n"
            f"{proc.stderr.strip() or tail(p.nginx_log, 10)}"
        )


def native_values(
    cfg: LabSettings,
    servers: Mapping[str, str] | None,
    replicas: Mapping[str, int] | None = None,
    bases: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The placeholders for this lab, each mode reached as ``servers`` listen (None:
    the defaults); ``bases`` moves a mode's first gateway to another port."""
    values = nginx_conf.target_values(
        "native",
        limits=cfg.limits,
        port=cfg.port,
        state_dir=cfg.state_dir,
        replicas=replicas,
        tls_port=cfg.tls_port,
        servers=servers,
        run_as=pwd.getpwuid(0).pw_name if os.geteuid() == 0 else None,
    )
    for mode, port in (bases or {}).items():
        first = nginx_conf.native_address(cfg.state_dir, port, mode, (servers or {}).get(mode))
        addresses = values[f"{mode}_server"].split()
        values[f"{mode}_server"] = " ".join([first, *addresses[1:]])
    return values


def make_certs(tls_dir: Path) -> str:
    """The lab's CA and nginx's certificate in ``tls_dir``, each made only when missing
    (nginx/make-certs.sh); returns what the script said it made."""
    proc = subprocess.run(
        ["sh", str(MAKE_CERTS), str(tls_dir)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise LabError(f"could not make the lab's TLS certificates:\n{proc.stderr.strip()}")
    return proc.stdout.strip()


def render_config(
    cfg: LabSettings, active: str | Split, servers: Mapping[str, str] | None = None
) -> None:
    """Every file of the config, with ``active`` (a mode or a split) serving ``/``
    and each mode reached as its server speaks (``servers``; the defaults otherwise)."""
    values = native_values(cfg, servers)
    mode, split = (None, active) if isinstance(active, dict) else (active, None)
    files = nginx_conf.render(values, mode, split, cfg.templates, servers)
    nginx_conf.make_runtime_dirs(values)
    nginx_conf.write_files(Paths(cfg.state_dir).nginx_dir, files)


def rendered_servers(cfg: LabSettings) -> dict[str, str]:
    """mode -> server recorded in the rendered pass_<mode>.conf files (the last `lab server`)."""
    found = {}
    for mode in MODES:
        try:
            text = (Paths(cfg.state_dir).nginx_dir / nginx_conf.pass_file(mode)).read_text("utf-8")
        except OSError:
            continue
        if (record := nginx_conf.read_server(text)) is not None:
            found[mode] = record[1]
    return found


def active_mode(cfg: LabSettings) -> str | Split | None:
    try:
        text = Paths(cfg.state_dir).active.read_text(encoding="utf-8")
    except OSError:
        return None
    return nginx_conf.read_active_mode(text)


def master_alive(pid: int) -> bool:
    """True while ``pid`` is a live nginx master (its workers can outlive a killed master)."""
    return any(
        p.pid == pid and p.state != "Z" and p.title.startswith(MASTER_TITLE) for p in read_proc()
    )


def reload_with(cfg: LabSettings, nginx: str, master: int, name: str, text: str) -> set[int]:
    """Write one config file, ``nginx -t``, SIGHUP the master, wait for new workers.

    Returns the workers that accepted connections before the reload, once none
    of them does any more. On any failure (the test, a dead master, a reload
    nginx did not take) the previous file is put back and LabError raised.
    """
    return reload_with_files(cfg, nginx, master, {name: text})


def reload_with_files(
    cfg: LabSettings, nginx: str, master: int, files: Mapping[str, str]
) -> set[int]:
    """``reload_with`` for several files in one reload: all new, or (on failure) all as before."""
    if not master_alive(master):
        raise LabError(
            f"nginx's master process ({master}) is not running, so nginx cannot be "
            "reconfigured: restart the lab with `lab up`"
        )
    nginx_dir = Paths(cfg.state_dir).nginx_dir
    before = {n: (nginx_dir / n).read_text("utf-8") for n in files if (nginx_dir / n).exists()}
    nginx_conf.write_files(nginx_dir, files)
    name = ", ".join(files)
    try:
        nginx_test(nginx, cfg)
        # SIGHUP: nginx re-reads the config, starts new workers, and lets the old
        # ones finish the requests they hold (a graceful reload: none dropped).
        old_workers = accepting_workers(read_proc(), master)
        os.kill(master, signal.SIGHUP)
        wait_for_reload(read_proc, master, old_workers)
    except (LabError, OSError) as exc:
        nginx_conf.write_files(nginx_dir, before)
        for new in set(files) - set(before):
            (nginx_dir / new).unlink(missing_ok=True)
        if isinstance(exc, LabError):
            raise
        raise LabError(f"could not reload nginx ({exc}); kept the previous {name}") from None
    return old_workers
