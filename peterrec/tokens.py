"""Special item ids. Real items start at ``NUM_SPECIAL_TOKENS``, ordered by descending frequency."""

PAD, MASK, CLS, UNK = 0, 1, 2, 3
NUM_SPECIAL_TOKENS = 4
