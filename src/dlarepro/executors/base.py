"""The executor protocol: options, submit, attach, wait."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping


class ExecutorError(RuntimeError):
    """A bad executor name or option, or a job that could not be submitted: one line for the user."""


#: option values end up on #SBATCH lines and in job names: no line breaks, no control characters
SAFE_TEXT = re.compile(r"^[^\x00-\x1f\x7f]*$")


@dataclass(frozen=True)
class Option:
    """One executor option: its type, a check, a default and what a valid value is."""

    kind: type  # int, float, str or dict
    expected: str
    default: Any = None
    check: Callable[[Any], bool] = lambda v: True

    def convert(self, name: str, value: Any) -> Any:
        """``value`` as this option's type (``--config`` hands numbers over as strings)."""
        if isinstance(value, str) and self.kind in (int, float):
            try:
                value = self.kind(value)
            except ValueError:
                raise ExecutorError(f"executor option {name}={value!r} is invalid: expected {self.expected}") from None
        ok = isinstance(value, self.kind) and not isinstance(value, bool)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if ok and self.kind is str:
            ok = bool(SAFE_TEXT.match(value))
        if ok and self.kind is dict:
            ok = all(isinstance(k, str) and SAFE_TEXT.match(k) and SAFE_TEXT.match(str(v)) for k, v in value.items())
        if not ok or not self.check(value):
            raise ExecutorError(f"executor option {name}={value!r} is invalid: expected {self.expected}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": {int: "integer", float: "number", str: "string", dict: "object"}[self.kind],
                "description": self.expected}


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def follow(job: Any, report: Callable[[str], None], poll_seconds: float) -> str:
    """Poll a submitit job until it is done, reporting each new state; returns the final state."""
    last = None
    while not job.done(force_check=True):
        state = job.state
        if state != last:
            report(f"job {job.job_id}: {state}")
            last = state
        time.sleep(poll_seconds)
    return job.state


@dataclass
class Submission:
    """A submitted (or re-attached) job: what is recorded in ``job.json`` and the live handle."""

    record: dict[str, Any]
    handle: Any = None
    state: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Executor:
    """One backend. ``options`` maps each option name to an :class:`Option`."""

    name: ClassVar[str]
    description: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, options: Mapping[str, Any]):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ExecutorError(f"the {self.name} executor has no option(s) {unknown}; its options are "
                                f"{sorted(self.options)}")
        self.settings = {k: o.default for k, o in self.options.items()}
        self.settings.update({k: self.options[k].convert(k, v) for k, v in options.items()})

    def submit(self, job: Any, folder: Path, run_id: str, threads: int | None,
               report: Callable[[str], None] | None = None) -> Submission:
        raise NotImplementedError

    def attach(self, record: Mapping[str, Any], folder: Path, poll_seconds: float = 10.0,
               report: Callable[[str], None] | None = None) -> Submission | None:
        """The job a previous workflow recorded, if it is still pending or running; else None. A
        job whose state cannot be learnt is waited for, never taken for dead."""
        return None

    def wait(self, submission: Submission, report: Callable[[str], None], poll_seconds: float) -> None:
        """Block until the job has ended, calling ``report`` on every change of state."""
        raise NotImplementedError
