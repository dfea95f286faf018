"""peterrec: parameter-efficient transfer of sequential recommenders (PeterRec on a NextItNet backbone)."""

__version__ = "0.1.0"

PAD, MASK, CLS, UNK = 0, 1, 2, 3
NUM_SPECIAL_TOKENS = 4
