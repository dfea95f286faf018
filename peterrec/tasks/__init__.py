"""Downstream tasks: profile, coldrec and nextitem (DESIGN.md "Tasks and evaluation protocols")."""

from __future__ import annotations

from peterrec.config import FinetuneConfig
from peterrec.tasks.coldrec import ColdRecTask
from peterrec.tasks.nextitem import NextItemTask
from peterrec.tasks.profile import ProfileTask


def build_task(config: FinetuneConfig, base):
    """The task object for ``config.task.type``, built on the pretrained vocabulary of ``base``."""
    if config.task.type == "profile":
        return ProfileTask(config, base.vocab)
    if config.task.type == "coldrec":
        return ColdRecTask(config, base.vocab)
    return NextItemTask(config, base.vocab, base.output, base.backbone.causal)


__all__ = ["build_task", "ProfileTask", "ColdRecTask", "NextItemTask"]
