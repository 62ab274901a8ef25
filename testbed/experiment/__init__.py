"""Failure experiments: spec, faults, runner, metrics, plots and report (the paper's Section 5 as data)."""
