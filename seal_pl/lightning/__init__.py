"""The Lightning shell: data modules, LightningModules and callbacks around the pure core."""

from seal_pl.lightning.knowledge import KnowledgeDataModule, KnowledgeIncorporationModule

__all__ = ["KnowledgeDataModule", "KnowledgeIncorporationModule"]
