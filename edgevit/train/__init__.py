"""Training on labelled image folders: the fp32 fine-tune and quantization-aware training."""
