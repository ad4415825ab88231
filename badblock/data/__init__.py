"""Training data: the store (``badblock.data.store``), the preprocess stage that builds it
(``badblock.data.preprocess``) and the pieces the trainer reads it with.

Kept free of torch imports so that the store can be written and read without it.
"""
