"""Knowledge-incorporation domain (SQuAD): the pure, model-free core.

SEAL's knowledge task asks a model to write a "self-edit" (implications, rewrites, question-answer
pairs) about a passage, fine-tunes on it, and then answers questions about the passage without
seeing it. This package holds everything in that loop that needs no model:

* ``data``: passages and questions, loaders for SQuAD v1.1/v2 and the flat per-passage shape,
  seeded subset selection, self-edit files.
* ``prompts``: self-edit and closed-book answer prompts (text and chat variants).
* ``sequences``: turning a self-edit into training sequences.
* ``grading``: SQuAD normalisation, containment / exact match / F1, and pluggable graders
  including a cached yes/no LLM judge.
"""
