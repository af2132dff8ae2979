"""The Lightning shell: data modules, LightningModules and callbacks around the pure core."""

import torch
from jsonargparse import typing

from seal_pl.lightning.arc import ARCDataModule, ARCTTTModule
from seal_pl.lightning.continual import ContinualDataModule, ContinualSelfEditsModule
from seal_pl.lightning.cpt import ContinuedPretrainingModule, CPTDataModule
from seal_pl.lightning.knowledge import KnowledgeDataModule, KnowledgeIncorporationModule, SelfEditDistillDataModule
from seal_pl.lightning.policy_sft import PolicySFTModule, SFTDataModule

__all__ = [
    "ARCDataModule",
    "ARCTTTModule",
    "CPTDataModule",
    "ContinualDataModule",
    "ContinualSelfEditsModule",
    "ContinuedPretrainingModule",
    "KnowledgeDataModule",
    "KnowledgeIncorporationModule",
    "PolicySFTModule",
    "SFTDataModule",
    "SelfEditDistillDataModule",
]

# Options typed with jsonargparse's restricted numbers keep those float/int subclasses, and they reach
# the hyperparameters Lightning saves in checkpoints: torch.load with weights_only (the default)
# must be allowed to rebuild them.
torch.serialization.add_safe_globals(
    [typing.PositiveFloat, typing.PositiveInt, typing.NonNegativeFloat, typing.NonNegativeInt]
)
