"""What the gateway reads of and does to the machine it runs on (Linux): the CPUs it
may use (cgroups, affinity), the per-process files of /proc, and the process groups
of the scripts it starts. It imports the standard library and gateway.numbers only,
so the lab's /proc reader runs its parsers inside every image (lab/system/procfs.py).
"""
