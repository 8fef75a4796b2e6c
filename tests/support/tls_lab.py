"""The lab's TLS listener as the tests reach it: ``tls_url`` and ``ca_file``.

From ``lab status --json`` for a lab this suite found or started; for a lab
someone else runs (LAB_URL), from LAB_TLS_URL and LAB_CA_FILE, which must then
be set: a TLS test never skips for want of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.lab import Lab, run_lab


@dataclass(frozen=True)
class TLSLab:
    url: str  # https://127.0.0.1:8443
    ca_file: str  # the lab's CA certificate, on this host
    plain_url: str  # the same lab over plain HTTP


@pytest.fixture(scope="session")
def tls_lab(lab: Lab) -> TLSLab:
    if lab.target == "external":
        url, ca_file = os.environ.get("LAB_TLS_URL", ""), os.environ.get("LAB_CA_FILE", "")
        if not (url and ca_file):
            pytest.fail("LAB_URL names an outside lab: set LAB_TLS_URL and LAB_CA_FILE for it too")
    else:
        status = run_lab("status", "--json", timeout=60)
        if status.returncode != 0:
            pytest.fail(f"`lab status --json` failed:\n{status.stdout}\n{status.stderr}")
        got = json.loads(status.stdout)
        url, ca_file = got["tls_url"], got["ca_file"]
    if not Path(ca_file).is_file():
        pytest.fail(f"the lab's CA certificate {ca_file} is not a file on this host")
    return TLSLab(url.rstrip("/"), ca_file, lab.url)
