"""Helpers the test suites import (never collected): the app contract, the one fake
target, fault controls, raw HTTP and a steady client."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
