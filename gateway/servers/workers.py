"""How many processes run app code under each server: ``workers`` in ``lab status``.

- runner: one gunicorn process whose threads wait on scripts (the scripts are
  the per-request processes);
- fcgiwrap: its preforked processes, one script at a time each, so as many as
  scripts may run at once: ``cgi_max_scripts`` (``workers`` does not apply to
  CGI, whose concurrency is the script cap under either server);
- every gunicorn and uvicorn server: its worker processes.
"""

from __future__ import annotations

from gateway.config import Settings


def worker_processes(settings: Settings) -> int:
    server = settings.server_name
    if server == "runner":
        return 1
    if server == "fcgiwrap":
        return settings.cgi_max_scripts
    return settings.worker_count
