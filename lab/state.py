"""Which target ran ``lab up`` here, so later commands talk to the same one.

``lab up`` records the target name in ``<state_dir>/target``; ``down``,
``status``, ``switch`` and ``logs`` use it unless ``LAB_TARGET`` says otherwise,
and ``down`` removes it. Without a record the usual choice applies
(``lab.target.target_name``: docker when an engine answers, else native).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lab.config import LabConfig
from lab.target import TARGET_NAMES, target_name

TARGET_FILE = "target"


def _path(cfg: LabConfig) -> Path:
    return cfg.state_dir / TARGET_FILE


def record_target(cfg: LabConfig, name: str) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    _path(cfg).write_text(name + "\n", encoding="utf-8")


def recorded_target(cfg: LabConfig) -> str | None:
    try:
        name = _path(cfg).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name if name in TARGET_NAMES else None


def clear_target(cfg: LabConfig) -> None:
    _path(cfg).unlink(missing_ok=True)


def current_target_name(cfg: LabConfig, env: Mapping[str, str] | None = None) -> str:
    """LAB_TARGET if set, else the target ``lab up`` recorded, else the usual choice."""
    e = os.environ if env is None else env
    if e.get("LAB_TARGET", "").strip():
        return target_name(e)
    return recorded_target(cfg) or target_name(e)
