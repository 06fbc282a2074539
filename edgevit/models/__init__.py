"""Model zoo in training form: faithful to each paper, official state_dict keys.

Each family is one module here that registers its variants at its foot; the registry finds them itself.
"""

from .registry import (
    InputSpec,
    ModelEntry,
    Size,
    check_input_size,
    create_model,
    get_entry,
    list_models,
    parse_size,
    register_model,
    size_hw,
    size_text,
)

__all__ = [
    "InputSpec",
    "ModelEntry",
    "Size",
    "check_input_size",
    "create_model",
    "get_entry",
    "list_models",
    "parse_size",
    "register_model",
    "size_hw",
    "size_text",
]
