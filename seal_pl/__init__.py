"""seal-pl: SEAL (Self-Adapting Language Models) as a Lightning-based modular trainer.

The package is split into a pure core (plain Python/PyTorch: data formats, prompts, sequence
building, grading, the inner-loop trainer) and a thin Lightning shell (``seal_pl.lightning``)
that wires data, devices, logging and stages. ``seal`` (see ``seal_pl.cli``) is the entry point.
"""

__version__ = "0.1.0"

import yaml as _yaml

# Options typed with jsonargparse's restricted numbers (PositiveFloat, PositiveInt, ...) keep those
# float/int subclasses in parsed configs; run directories store configs with yaml.safe_dump, which
# knows only the exact built-in types. Dump the subclasses as the plain numbers they are.
_yaml.SafeDumper.add_multi_representer(float, _yaml.SafeDumper.represent_float)
_yaml.SafeDumper.add_multi_representer(int, _yaml.SafeDumper.represent_int)
