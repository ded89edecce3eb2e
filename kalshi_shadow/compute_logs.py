"""Dagster's local compute logs, without the terminal mirror.

`LocalComputeLogManager` mirrors each captured stream to the terminal with a `tail -F` and a Python watcher process:
four processes per captured step, ~3.5 CPU-seconds per live run, more than the run's own work at a run every 30 s.
Under `kalshi-shadow up` no one watches that terminal, so `up`'s instance (supervisor.instance_yaml) writes the same
files, where the UI and housekeeping find them, with no process per step.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._utils import ensure_file, touch_file


class FileComputeLogManager(LocalComputeLogManager):
    @classmethod
    def from_config_value(cls, inst_data, config_value) -> FileComputeLogManager:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Iterator[CapturedLogContext]:
        paths = [self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[io]) for io in (ComputeIOType.STDOUT, ComputeIOType.STDERR)]
        for path in paths:
            ensure_file(path)
        with redirect_to_file(sys.stdout, paths[0]), redirect_to_file(sys.stderr, paths[1]):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # how the UI knows the capture is complete
