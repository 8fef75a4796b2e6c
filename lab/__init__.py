"""Gateway Lab's host side: the ``lab`` CLI and what it drives. A map (docs/architecture.md):

- ``errors``, ``settings``: the one error type and every LAB_* setting;
- ``nginx/``: the config renderer (standard library only; shipped into the nginx image);
- ``system/``: host mechanics (/proc, service processes, ports, loopback HTTP);
- ``targets/``: where a lab runs (native, docker) behind one interface;
- ``workshop/``: bench, timeline, claims and what they share;
- ``cli``: the commands, under one error policy.

Imports point down this list's layers only (cli -> workshop -> targets -> system,
nginx -> settings, errors); tests/unit/lab/test_layout.py checks it. No imports here.
"""
