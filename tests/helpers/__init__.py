"""What the tests share: graph builders, broken folds, checks of a fold's numbers, the fixtures' manifest.

Test modules import from here, never from one another or from conftest.
"""
