"""The workshop tools: ``lab bench``, ``lab timeline``, ``lab claims``.

``common`` (URLs, output folders, run metadata, the lab-is-up check) and the
pure ``analysis`` sit at the bottom; the engines (``loadgen``, ``wrk``) send
the load; ``charts`` draws; each tool module registers its own command.
"""
