"""Data: readers for click logs, labels and item text; the item vocabulary; sequence utilities."""

from peterrec.data.readers import (
    Interactions,
    check_users_have_sequences,
    group_sequences,
    read_interactions,
    read_item_text,
    read_labels,
    read_peterrec_lines,
)
from peterrec.data.sequences import (
    LeaveLastOut,
    filter_min_length,
    fold_users,
    leave_last_out,
    left_pad,
    split_users,
    training_windows,
)
from peterrec.data.vocab import Vocabulary

__all__ = [
    "Interactions",
    "LeaveLastOut",
    "Vocabulary",
    "check_users_have_sequences",
    "filter_min_length",
    "fold_users",
    "group_sequences",
    "leave_last_out",
    "left_pad",
    "read_interactions",
    "read_item_text",
    "read_labels",
    "read_peterrec_lines",
    "split_users",
    "training_windows",
]
