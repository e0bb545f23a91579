"""Tasks for eqsolve: the task protocol (:mod:`.base`) and the shipped tasks.

:class:`Task`, :class:`TaskData`, :func:`get_task`, :func:`register_task` and
:func:`available_tasks` are re-exported here; Sudoku-Extreme (:mod:`.sudoku`) and Maze-Unique
(:mod:`.maze`) are registered on first use of the registry.
"""

from __future__ import annotations

from .base import Task, TaskData, available_tasks, get_task, register_task

__all__ = ["Task", "TaskData", "available_tasks", "get_task", "register_task"]
