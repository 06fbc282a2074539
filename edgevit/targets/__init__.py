"""Targets: one module each, registering a :class:`Target` at its foot (see ``registry``)."""

from .registry import Target, get_target, list_targets, register_target, target_for_path, target_names

__all__ = ["Target", "get_target", "list_targets", "register_target", "target_for_path", "target_names"]
