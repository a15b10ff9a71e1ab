"""The fold: grow linear regions, evaluate each in float64, replace it by one operator.

:mod:`.ops` says what each ONNX operator does to a linear form (or why it cannot), :mod:`.regions`
grows regions over one graph, :mod:`.evaluate` computes a region's numbers with the identities of
:mod:`.algebra`, :mod:`.rewrite` replaces it in the graph, and :mod:`.passes` runs all of that over
every graph of a model and returns a :class:`.report.Report`.
"""
