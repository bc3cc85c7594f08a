"""Where a run's job executes: one class per backend behind one small protocol.

* ``local``: a submitit subprocess on this machine;
* ``slurm``: an sbatch job through submitit (GPUs, time limit, requeue on preemption);
* ``debug``: in the calling process (no submission at all).

A backend declares its options (:attr:`Executor.options`, which the grid schema, the CLI and
``dla-repro submit`` read), submits a :class:`dlarepro.jobs.TrainJob`, re-attaches to a job a
previous workflow left running, and waits. Adding a backend is one module here and one line in
:data:`EXECUTORS`.
"""

from __future__ import annotations

from .base import Executor, ExecutorError, Option, Submission
from .debug import DebugExecutor
from .local import LocalExecutor
from .slurm import SlurmExecutor

EXECUTORS: dict[str, type[Executor]] = {cls.name: cls for cls in (LocalExecutor, SlurmExecutor, DebugExecutor)}


def executor_class(name: str) -> type[Executor]:
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ExecutorError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}") from None


def make_executor(name: str, options: dict | None = None) -> Executor:
    """An executor with its options validated (strings from ``--config`` are converted)."""
    return executor_class(name)(options or {})


def options_schema() -> dict:
    """JSON schema of ``executor_options``: every option any executor takes (each backend checks
    its own when it is made)."""
    properties: dict = {}
    for cls in EXECUTORS.values():
        for key, option in cls.options.items():
            properties.setdefault(key, option.schema())
    return {"type": "object", "additionalProperties": False, "properties": properties}


def option_problems(options: dict, where: str) -> list[str]:
    """Every executor option value no executor would accept (control characters, a bad sbatch
    option name, a wrong type), one line each: what the grid's validation reports."""
    known = {key: option for cls in EXECUTORS.values() for key, option in cls.options.items()}
    problems = []
    for key, value in (options or {}).items():
        if key in known:
            try:
                known[key].convert(key, value)
            except ExecutorError as err:
                problems.append(f"{where}: {err}")
    return problems


__all__ = ["EXECUTORS", "Executor", "ExecutorError", "Option", "Submission", "executor_class", "make_executor",
           "option_problems", "options_schema"]
