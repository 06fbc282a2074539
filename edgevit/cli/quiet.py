"""Silence third-party chatter that a user of the command cannot act on (EDGEVIT_DEBUG=1 keeps it)."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_third_party() -> None:
    """Drop the deprecation warnings, start-up notices and progress bars of the converters edgevit drives."""
    # third-party deprecation chatter is not the user's to act on
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    # the Core ML trace freezes shape checks on purpose: deploy forms are built for one input size
    warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
    logging.getLogger("torchao").setLevel(logging.ERROR)  # optional CUDA kernels it cannot load
    logging.getLogger("coremltools").setLevel(logging.ERROR)  # macOS-only proxies missing elsewhere
    # "torchvision is not installed" once per torchvision op, from the ONNX exporter's registry
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    # "exported with CoreML specification version N": said for every model, whatever the target set
    logging.getLogger("executorch.backends.apple.coreml.compiler.coreml_preprocess").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")  # converters' pass-by-pass bars; the CLI shows its own
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # XLA/oneDNN start-up notices from litert's jax
