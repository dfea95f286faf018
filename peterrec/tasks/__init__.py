"""Downstream tasks: profile, coldrec and nextitem (protocols in docs/protocols.md).

Each implements :class:`~peterrec.tasks.base.Task`; :data:`TASKS` maps a ``task.type`` name to its class,
so commands look tasks up instead of branching on their names.
"""

from __future__ import annotations

from peterrec.config import FinetuneConfig
from peterrec.tasks.base import Task
from peterrec.tasks.coldrec import ColdRecTask
from peterrec.tasks.nextitem import NextItemTask
from peterrec.tasks.profile import ProfileTask

TASKS: dict[str, type[Task]] = {"profile": ProfileTask, "coldrec": ColdRecTask, "nextitem": NextItemTask}


def task_class(task_type: str) -> type[Task]:
    """The class of a ``task.type`` (the config loader has already checked the name)."""
    return TASKS[task_type]


def build_task(config: FinetuneConfig, base) -> Task:
    """The task object for ``config.task.type``, built on the loaded backbone run ``base``."""
    return task_class(config.task.type)(config, base)


def resolve_monitor(config: FinetuneConfig) -> str:
    """The metric early stopping watches for this config (``train.monitor: auto`` resolved by the task)."""
    return task_class(config.task.type).resolve_monitor(config.task, config.train.monitor)


__all__ = [
    "TASKS",
    "ColdRecTask",
    "NextItemTask",
    "ProfileTask",
    "Task",
    "build_task",
    "resolve_monitor",
    "task_class",
]
