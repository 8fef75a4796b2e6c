"""TLS at the edge without a running lab: nginx/make-certs.sh, the TLS listener
in the rendered config, and how compose.yaml and the nginx image carry them.

The certificates are checked the way clients check them: ``openssl verify``
against the CA, and a real TLS handshake (Python's ssl, verifying the chain and
the host name) for each name the lab's URLs use.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
import subprocess
import threading
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.nginx import render as nginx_conf
from lab.settings import LabSettings, Limits
from lab.targets.native_nginx import MAKE_CERTS, make_certs

ROOT = Path(__file__).resolve().parents[3]
NAMES = ("localhost", "127.0.0.1")


@cache
def _shared_certs(tls_dir: str) -> None:
    make_certs(Path(tls_dir))


def tls_values(tls_dir: Path) -> dict[str, str]:
    """Placeholders pointing the TLS listener at certificates made in ``tls_dir``."""
    _shared_certs(str(tls_dir))
    files = nginx_conf.tls_files(tls_dir)
    return {
        "tls_certificate": str(files["server.pem"]),
        "tls_certificate_key": str(files["server.key"]),
    }


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def handshake(tls_dir: Path, name: str) -> str:
    """A TLS handshake with nginx's certificate, verified against the lab's CA as ``name``."""
    files = nginx_conf.tls_files(tls_dir)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files["server.pem"], files["server.key"])
    client_ctx = ssl.create_default_context(cafile=str(files["ca.pem"]))
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    server = threading.Thread(target=serve)
    server.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=name) as tls:
            version = tls.version() or ""
            tls.sendall(b"x")
    finally:
        b.close()
        server.join(10)
        a.close()
    return version


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    tls_dir = tmp_path / "tls"
    make_certs(tls_dir)
    return tls_dir


# -- nginx/make-certs.sh --------------------------------------------------------------


def test_server_certificate_verifies_against_the_lab_ca(certs: Path) -> None:
    files = nginx_conf.tls_files(certs)
    verified = openssl("verify", "-CAfile", str(files["ca.pem"]), str(files["server.pem"]))
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip().endswith(": OK")


def test_server_certificate_names_localhost_and_the_loopback_address(certs: Path) -> None:
    shown = openssl("x509", "-in", str(certs / "server.pem"), "-noout", "-ext", "subjectAltName")
    assert shown.returncode == 0, shown.stderr
    sans = re.split(r",\s*", shown.stdout.splitlines()[-1].strip())
    assert sorted(sans) == ["DNS:localhost", "IP Address:127.0.0.1"]


@pytest.mark.parametrize("name", NAMES)
def test_a_verifying_client_accepts_each_name(certs: Path, name: str) -> None:
    assert handshake(certs, name) in ("TLSv1.2", "TLSv1.3")


def test_a_verifying_client_refuses_another_name(certs: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(certs, "example.com")


def test_the_ca_is_a_ca_and_the_server_certificate_is_not(certs: Path) -> None:
    ca = openssl("x509", "-in", str(certs / "ca.pem"), "-noout", "-ext", "basicConstraints")
    server = openssl("x509", "-in", str(certs / "server.pem"), "-noout", "-ext", "basicConstraints")
    assert "CA:TRUE" in ca.stdout and "pathlen:0" in ca.stdout
    assert "CA:FALSE" in server.stdout
    eku = openssl("x509", "-in", str(certs / "server.pem"), "-noout", "-ext", "extendedKeyUsage")
    assert "TLS Web Server Authentication" in eku.stdout


def test_keys_are_private_and_certificates_readable(certs: Path) -> None:
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in certs.iterdir()}
    assert modes == {"ca.key": 0o600, "server.key": 0o600, "ca.pem": 0o644, "server.pem": 0o644}


def test_a_second_run_changes_nothing(certs: Path) -> None:
    before = {p.name: p.read_bytes() for p in certs.iterdir()}
    assert make_certs(certs) == ""
    assert {p.name: p.read_bytes() for p in certs.iterdir()} == before


def test_a_missing_server_certificate_is_made_again_from_the_same_ca(certs: Path) -> None:
    ca = (certs / "ca.pem").read_bytes()
    old = (certs / "server.pem").read_bytes()
    (certs / "server.pem").unlink()
    assert "server certificate" in make_certs(certs)
    assert (certs / "ca.pem").read_bytes() == ca
    assert (certs / "server.pem").read_bytes() != old
    assert handshake(certs, "localhost")


def test_a_new_ca_means_a_new_server_certificate(certs: Path) -> None:
    """A server certificate from another CA would fail every client that trusts ca.pem."""
    old_ca = (certs / "ca.pem").read_bytes()
    (certs / "ca.pem").unlink()
    said = make_certs(certs)
    assert "new local CA" in said and "server certificate" in said
    assert (certs / "ca.pem").read_bytes() != old_ca
    assert handshake(certs, "127.0.0.1")


def test_the_script_says_what_it_needs() -> None:
    done = subprocess.run(["sh", str(MAKE_CERTS)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "usage" in done.stderr


# -- the rendered config ---------------------------------------------------------------


def rendered(target: str, tmp_path: Path, **kwargs: Any) -> dict[str, str]:
    port = 18080 if target == "native" else None
    values = nginx_conf.target_values(
        target, limits=Limits(), port=port, state_dir=tmp_path / "state", **kwargs
    )
    return nginx_conf.render(values)


def listen_lines(server_conf: str) -> list[str]:
    return re.findall(r"^\s*listen\s+([^;]+);", server_conf, re.MULTILINE)


def test_native_listens_for_tls_and_http2_on_lab_tls_port(tmp_path: Path) -> None:
    files = rendered("native", tmp_path, tls_port=18443)
    assert listen_lines(files["server.conf"]) == ["127.0.0.1:18080", "127.0.0.1:18443 ssl http2"]
    tls = tmp_path / "state" / "tls"
    assert f"ssl_certificate     {tls / 'server.pem'};" in files["tls.conf"]
    assert f"ssl_certificate_key {tls / 'server.key'};" in files["tls.conf"]


def test_compose_listens_for_tls_on_8443_with_the_volume_certificate(tmp_path: Path) -> None:
    files = rendered("compose", tmp_path)
    assert listen_lines(files["server.conf"]) == ["8080", "8443 ssl http2"]
    assert "ssl_certificate     /var/lib/lab-tls/server.pem;" in files["tls.conf"]


def test_one_server_block_serves_both_listeners(tmp_path: Path) -> None:
    """The TLS listener is a second `listen` in the one server, not a copy of it."""
    files = rendered("native", tmp_path)
    assert files["server.conf"].count("server {") == 1
    assert re.search(r"^\s*include tls\.conf;", files["server.conf"], re.MULTILINE)


def test_lab_settings_name_the_tls_url_and_ca_file(tmp_path: Path) -> None:
    cfg = LabSettings.from_env({"LAB_TLS_PORT": "18443", "LAB_STATE_DIR": str(tmp_path)})
    assert cfg.tls_url == "https://127.0.0.1:18443"
    assert cfg.ca_file == cfg.ca_file_of("native") == tmp_path / "tls" / "ca.pem"
    # A Docker target's CA is copied beside it, never over the native one (its key is there).
    assert len({cfg.ca_file_of("docker"), cfg.ca_file_of("swarm"), cfg.ca_file}) == 3
    assert LabSettings.from_env({}).tls_port == 8443


# -- compose.yaml and the nginx image --------------------------------------------------


@pytest.fixture(scope="module")
def nginx_service() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service: dict[str, Any] = compose["services"]["nginx"]
    service["_volumes"] = compose["volumes"]
    return service


def test_compose_publishes_the_tls_port_on_loopback(nginx_service: dict[str, Any]) -> None:
    assert "127.0.0.1:${LAB_TLS_PORT:-8443}:8443" in nginx_service["ports"]


def test_compose_keeps_the_ca_in_its_own_volume(nginx_service: dict[str, Any]) -> None:
    from lab.targets.docker.compose import STATE_VOLUME, TLS_VOLUME

    mounts = dict(v.split(":", 1)[::-1] for v in nginx_service["volumes"])
    assert mounts[str(nginx_conf.COMPOSE_TLS_DIR)] == "nginx-tls"
    assert "nginx-tls" in nginx_service["_volumes"]
    # `make down` removes the state volume by name and must not meet the CA's.
    assert TLS_VOLUME.endswith("_nginx-tls") and STATE_VOLUME.endswith("_nginx-state")
    makefile = (ROOT / "Makefile").read_text()
    assert f"docker volume rm --force {TLS_VOLUME}" in makefile


def test_the_nginx_image_makes_the_certificates_at_start() -> None:
    dockerfile = (ROOT / "nginx" / "Dockerfile").read_text()
    entrypoint = (ROOT / "nginx" / "entrypoint.sh").read_text()
    assert re.search(r"apt-get install[^&]*\bopenssl\b", dockerfile)
    assert "COPY nginx/make-certs.sh /usr/local/bin/lab-make-certs" in dockerfile
    assert f"install -d -o www-data -g www-data {nginx_conf.COMPOSE_TLS_DIR}" in dockerfile
    assert f"TLS_DIR={nginx_conf.COMPOSE_TLS_DIR}" in entrypoint
    start = entrypoint.split("start)", 1)[1]
    assert start.index('lab-make-certs "$TLS_DIR"') < start.index("exec nginx")


def test_make_certs_runs_under_a_plain_posix_shell() -> None:
    """The image's /bin/sh is dash: no bashisms, checked with dash when it is installed."""
    dash = Path("/bin/dash")
    if not dash.exists():
        pytest.fail("/bin/dash is missing: Debian's sh, needed to check the script as it runs")
    checked = subprocess.run(
        [str(dash), "-n", str(MAKE_CERTS)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert os.access(MAKE_CERTS, os.X_OK)


def test_compose_gets_the_tls_port_of_the_settings() -> None:
    from lab.targets.docker.compose import compose_env

    cfg = LabSettings.from_env({"LAB_TLS_PORT": "9443"})
    assert compose_env(cfg, {"LAB_TLS_PORT": "1"})["LAB_TLS_PORT"] == "9443"


def test_a_bad_tls_port_is_refused_by_name() -> None:
    from lab.settings import SettingsError

    with pytest.raises(SettingsError, match="LAB_TLS_PORT"):
        LabSettings.from_env({"LAB_TLS_PORT": "https"})
