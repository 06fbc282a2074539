"""Quantization: calibration data, the float policy, and PTQ through each target's own quantizer."""

from .calibration import calibration_batch
from .pt2e import backend_quantizer, quant_options, quantize

__all__ = ["calibration_batch", "backend_quantizer", "quant_options", "quantize"]
