"""edgevit: small vision transformers from PyTorch to phones (ExecuTorch, Core ML, TFLite, ONNX)."""

__version__ = "0.1.0"
