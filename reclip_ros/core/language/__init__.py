"""Language: expressions to trees, one module per concern.

:mod:`.expression_tree` (the tree), :mod:`.parsing` (:class:`ExpressionParser`, extended
mode), :mod:`.spoken` (vocatives, fillers, repeated words, relation wordings),
:mod:`.commands` (the expression inside a robot command), :mod:`.extraction` (keyword
labels and the entity tree from the dependency parse), :mod:`.spacy_pipeline` (loading
spaCy once) and :mod:`.paper_extraction` (the authors' extraction, paper mode).
"""
