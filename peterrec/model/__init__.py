"""The models: the NextItNet backbone and its parts, item encoders, adapters, heads, and the two wholes
(:class:`~peterrec.model.next_item.NextItemModel` for pretraining,
:class:`~peterrec.model.transfer.TransferModel` for a downstream task)."""
