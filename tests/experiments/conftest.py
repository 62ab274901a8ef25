"""Whole-experiment tests share the runner fixture and check nothing of their runs is left behind."""

from testbed.experiment.pytest_helpers import experiment_runner  # noqa: F401
