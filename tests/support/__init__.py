"""Helpers the test suites import (never collected): the app contract, fakes, fault
controls, raw HTTP and a steady client."""
