"""Items added after training: a run with a content item encoder scores them from their content alone.

:func:`add_items` reads an item file (the columns the backbone was pretrained with) and appends every item
the run does not know to the vocabulary it scores (the backbone's for next-item runs, the target vocabulary
for cold-start runs). Their feature rows come from the run's own featurizer; they have no trained ID row or
output bias (zero), so their scores come from the text through the trained encoder. `peterrec recommend
--items FILE` does this before scoring.
"""

from __future__ import annotations

import logging
from pathlib import Path

from peterrec.data import Vocabulary
from peterrec.errors import ConfigError
from peterrec.item_content import read_texts
from peterrec.runs import BaseRun, FinetunedRun

logger = logging.getLogger(__name__)


def _extended(vocab: Vocabulary, new_items: list[str]) -> Vocabulary:
    return Vocabulary([*vocab.items, *new_items], [*vocab.counts.tolist(), *([0] * len(new_items))])


def add_items(run: BaseRun | FinetunedRun, path: str | Path) -> list[str]:
    """Append the items of ``path`` that ``run`` does not know, in place; returns them (file order)."""
    base = run if isinstance(run, BaseRun) else run.base
    if base.content is None:
        raise ConfigError(
            f"--items {path}: {base.run_dir} represents items by ID only (model.item_encoder "
            f"{base.config.model.item_encoder!r}); new items need a content encoder (text or id+text)"
        )
    text_config = base.config.model.text
    texts = read_texts(text_config, str(path))
    task = "nextitem" if isinstance(run, BaseRun) else run.task_type
    if task == "profile":
        raise ConfigError(f"--items {path}: a profile run predicts labels, not items")
    vocab = run.extras["target_vocab"] if task == "coldrec" else base.vocab
    new_items = [item for item in texts if item not in vocab]
    if not new_items:
        logger.info("%s: every item is already known to the run", path)
        return []
    rows = base.content.rows_for(new_items, texts, "error", str(path))
    if task == "coldrec":
        run.model.head.with_new_items(rows)
        run.extras["target_vocab"] = _extended(vocab, new_items)
    else:
        encoder = base.backbone.item_encoder
        encoder.with_new_items(rows)
        outputs = {id(base.output): base.output}
        if isinstance(run, FinetunedRun):
            outputs[id(run.model.head.output)] = run.model.head.output
        for output in outputs.values():
            output.with_new_items(len(new_items))
        base.vocab = _extended(vocab, new_items)
    logger.info("%s: added %d items scored from their content alone", path, len(new_items))
    return new_items


__all__ = ["add_items"]
