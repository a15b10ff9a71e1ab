"""An ONNX model as the fold reads it: one graph's index, its constants and checked attributes, and
one walk over every graph of a model (:mod:`.walk`)."""
