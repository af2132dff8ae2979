"""The Lightning shell: data modules, LightningModules and callbacks around the pure core."""

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
