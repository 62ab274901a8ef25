"""Replicated services: roles kept by a replica manager, state synced over the emulated network."""
