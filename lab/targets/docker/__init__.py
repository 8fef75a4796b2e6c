"""The targets on a Docker engine: the compose project (``target``) and the swarm
stack (``swarm``), both built from compose.yaml.

Imports point one way: ``swarm`` builds on ``target`` (images, nginx control),
``target`` on ``compose``/``server``/``services``; nothing here imports ``swarm``.
"""
