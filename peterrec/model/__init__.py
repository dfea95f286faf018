"""The models: the NextItNet backbone and its parts, item encoders, adapters, heads, and the two wholes
(:class:`~peterrec.model.next_item.NextItemModel` for pretraining,
:class:`~peterrec.model.transfer.TransferModel` for a downstream task)."""

# Registers the content item encoders ("text", "id+text") beside the ID tables.
from peterrec.model import content_encoder as _content_encoder  # noqa: E402, F401
