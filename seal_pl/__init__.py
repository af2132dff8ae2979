"""seal-pl: SEAL (Self-Adapting Language Models) as a Lightning-based modular trainer.

The package is split into a pure core (plain Python/PyTorch: data formats, prompts, sequence
building, grading, the inner-loop trainer) and a thin Lightning shell (``seal_pl.lightning``)
that wires data, devices, logging and stages. ``seal`` (see ``seal_pl.cli``) is the entry point.
"""

__version__ = "0.1.0"
