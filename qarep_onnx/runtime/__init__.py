"""Everything that runs a model on onnxruntime: providers, inputs, validation and latency."""
