"""Node provenance shared, not copied, while a program is lowered.

Every pass that retraces a graph records where each new node came from (``node.meta["from_node"]``, a chain of
``torch.fx.traceback.NodeSource`` records), and ``NodeSource`` deep-copies the whole chain of its source node
each time. The chains grow by one link per pass, so a lowering with dozens of passes spends a sixth of its time
copying records that nothing changes after they are made: lvt's ``.pte`` export takes 31 s instead of 37 s with
them shared and its ``.tflite`` 20 s instead of 23 s, with the same bytes. The records are used for debugging
only (ETRecord, tlparse).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _same(record: Any, memo: dict) -> Any:
    return record


@contextmanager
def shared_provenance() -> Iterator[None]:
    """Inside the block, a deep copy of a ``NodeSource`` is the record itself (none is mutated once made)."""
    from torch.fx.traceback import NodeSource

    had_own = "__deepcopy__" in NodeSource.__dict__
    previous = NodeSource.__dict__.get("__deepcopy__")
    NodeSource.__deepcopy__ = _same
    try:
        yield
    finally:
        if had_own:
            NodeSource.__deepcopy__ = previous
        else:
            del NodeSource.__deepcopy__
