"""Host mechanics: /proc, service processes, ports, loopback HTTP.

Nothing here knows about nginx, modes or targets; the targets and the
workshop tools build on it.
"""
