"""The one /proc/PID/stat and /proc/PID/status parser (proc(5))."""

from __future__ import annotations

from gateway.system.procstat import stat_fields, status_kib


def test_stat_fields_count_from_the_last_parenthesis() -> None:
    # proc(5): the command name may hold spaces and ")".
    stat = "4242 (evil) name) S 17 4242 4242 0 -1 4194560 93 0 0 0"
    assert stat_fields(stat)[:4] == ["S", "17", "4242", "4242"]
    assert stat_fields("12 (a) b) (c) S 1 12 12 0") == ["S", "1", "12", "12", "0"]


def test_text_that_is_no_stat_line_has_no_fields() -> None:
    assert stat_fields("") == [] and stat_fields("S 1 2 3") == [] and stat_fields("1 a) S") == []


def test_status_kib_reads_ascii_digits_only() -> None:
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmRSS:\t  1234 kB\n"
    assert status_kib(status, "VmRSS") == 1234 and status_kib(status, "VmPeak") == 900
    assert status_kib("Name: x\n", "VmRSS") is None
    assert status_kib("VmRSS:\t\n", "VmRSS") is None
    assert status_kib("VmRSS:\t ١٢ kB\n", "VmRSS") is None  # Unicode digits are no number
