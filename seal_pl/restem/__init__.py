"""The ReST-EM outer loop (``seal restem``): rounds of E-step, filter, M-step and evaluation.

:class:`ReSTEMRun` is the orchestrator (its ``__init__`` is the config); :mod:`seal_pl.restem.layout`
holds the Lightning-free round bookkeeping; the filters live in :mod:`seal_pl.pipelines.restem`.
"""

from seal_pl.restem.runner import ReSTEMRun, StageConfig, main

__all__ = ["ReSTEMRun", "StageConfig", "main"]
