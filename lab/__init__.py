"""Gateway Lab's host side: the ``lab`` CLI and what it drives. A map (docs/architecture.md),
top layer first:

- ``cli`` (and ``__main__``): the commands, under one error policy;
- ``workshop/``: bench, timeline, claims and what they share; ``control``: the
  dashboard's server picker, a WSGI app on the host (lab.targets.control_process
  runs it);
- ``targets/``: where a lab runs (native, docker, swarm) behind one interface;
- ``servers``: the server behind each mode as the lab sees it (choosing, probing);
- ``system/``: host mechanics (/proc, service processes, ports, loopback HTTP);
  ``nginx/``: the config renderer (standard library only; shipped into the nginx image);
- ``settings``: every LAB_* setting;
- ``routing``: the modes and the grammar of what serves ``/`` (standard library
  only; shipped beside the renderer); ``errors``: the one error type.

Imports point down these layers only, never up nor across one (cli -> workshop,
control -> targets -> servers -> system, nginx -> settings -> routing, errors);
tests/unit/lab/test_layout.py checks it, and that every module is on this map.
No imports here.
"""
