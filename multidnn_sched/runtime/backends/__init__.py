"""Block-variant backends and manifest reading: ONNX Runtime, TensorRT, torch safetensors variants."""
