"""Language: expressions to trees.

The expression tree, the spaCy parser (extended mode) and the authors' extraction (paper
mode).
"""
