"""The ``seal`` command: LightningCLI with run directories, TensorBoard by default, YAML configs.

``seal {fit,validate,test,predict} --config a.yaml [--config b.yaml] [--run_dir DIR] [--key value]``

``seal restem --config r.yaml [--run_dir DIR]`` runs the ReST-EM outer loop (:mod:`seal_pl.restem`),
whose rounds are made of such runs.

* The stage commands and their run directories: :mod:`seal_pl.stage_cli`.
* A user error (bad file, record, option or run directory) prints one paragraph and exits 2;
  ``--debug`` (or ``SEAL_DEBUG=1``) adds the traceback (:mod:`seal_pl.errors`).
"""

from __future__ import annotations

import sys

from seal_pl.stage_cli import (
    RunDirConfig,
    RunDirConflictError,
    check_config_files,
    resolve_run_dir,
    run_as_command,
    run_stage,
)

__all__ = ["RunDirConfig", "RunDirConflictError", "main", "resolve_run_dir"]


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``seal`` console script.

    User errors print one paragraph and exit 2. A run stopped by SIGTERM or SIGINT exits 143 or 130
    with the command that resumes it; the run directory's lock is released in every case
    (:func:`~seal_pl.rundir.command_scope`).
    """
    run_as_command(_dispatch, sys.argv[1:] if args is None else list(args))


def _dispatch(argv: list[str]) -> None:
    if argv and argv[0] == "restem":
        check_config_files(argv)
        from seal_pl.restem.runner import main as restem_main

        restem_main(argv[1:])
        return
    run_stage(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
