"""What the gateway reads of the machine it runs on (Linux): the CPUs it may use
(cgroups, affinity) and the per-process files of /proc. Standard library only, so
the lab's /proc reader runs them inside every image (lab/system/procfs.py)."""
