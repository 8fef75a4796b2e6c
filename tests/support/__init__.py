"""Helpers the test suites import (never collected): the app contract, the one fake
target, fault controls, raw HTTP, a steady client, an HTTP/2 client and the
lab's TLS address."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
