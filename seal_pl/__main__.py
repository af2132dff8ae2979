"""``python -m seal_pl`` is the ``seal`` command."""

from seal_pl.cli import main

main()
