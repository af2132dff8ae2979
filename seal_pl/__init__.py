"""seal-pl: SEAL (Self-Adapting Language Models) as a Lightning-based modular trainer.

The package is split into a pure core (plain Python/PyTorch: data formats, prompts, sequence
building, grading, the inner-loop trainer) and a thin Lightning shell (``seal_pl.lightning``)
that wires data, devices, logging and stages. ``seal`` (see ``seal_pl.cli``) is the entry point.
"""

import os

# Idle OpenMP threads sleep instead of spinning: on a shared or oversubscribed CPU (several ranks,
# other jobs) spinning threads starve each other and steps become 5-15x slower. Set the variable
# yourself to override (it must be set before torch is imported, which is why it lives here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
