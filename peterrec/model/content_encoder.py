"""Content item encoders (the TransRec front end): items represented by their text, not only their id.

``model.item_encoder: text`` represents item id i by ``MLP(features[i])``, where ``features`` are frozen
content features of the item (TF-IDF or hashed words of its title and genres, or precomputed vectors such
as a sentence encoder's, :mod:`peterrec.data.item_features`) and the MLP (:class:`ContentProjection`) is
trained. ``id+text`` adds a learned ID row to the same vector; an item without a trained ID row (added
after pretraining) has a zero row and is represented by its text alone.

Both sides of the model use the same vectors: the input items and the next-item softmax, whose scores are
``hidden @ vectors.T + bias`` (:class:`ContentItemOutput`; tied, as in TransRec and UniSRec), and the
cold-start head scores target items through the same encoder (:class:`ContentTargetHead`). So a model
pretrained on source items can score items it never saw, from their features alone (zero-shot).

This is a simplification of TransRec, which trains its modality encoder (a language model) end to end:
here the content features are frozen and only the projection, the backbone and the adapters train.
Adapters can go into the encoder too (:meth:`ContentItemEncoder.add_adapter`): a bottleneck branch on
the projected vector, zero at init.

The special tokens ([PAD], [MASK], [CLS], [UNK]) have no content; they read four learned vectors.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from peterrec.model.init import trunc_normal_
from peterrec.model.item_encoder import ItemEncoder, positive_size, register_item_encoder, score_columns
from peterrec.tokens import NUM_SPECIAL_TOKENS

SPARSE_KEYS = ("indptr", "indices", "values")


def with_zero_rows(tensor: torch.Tensor, added: int) -> nn.Parameter:
    """A new parameter: ``tensor``'s rows, then ``added`` rows of zeros (items added after training have no
    trained bias or ID row)."""
    zeros = tensor.new_zeros(added, *tensor.shape[1:])
    return nn.Parameter(torch.cat([tensor.detach(), zeros]))


class FeatureTable(nn.Module):
    """Frozen feature rows (row r = one item), sparse (CSR: ``indptr``, ``indices``, ``values``) or dense.

    The rows are buffers that are *not* part of the state dict: they are content, not weights, and are
    saved with the run beside the weights (:mod:`peterrec.item_content`).
    """

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.sparse = "dense" not in tensors
        keys = (*SPARSE_KEYS, "shape") if self.sparse else ("dense",)
        if set(tensors) - {"shape"} != set(keys) - {"shape"} or (self.sparse and "shape" not in tensors):
            raise ValueError(f"feature rows need exactly {', '.join(keys)}; got {', '.join(sorted(tensors))}")
        for key in keys[:3] if self.sparse else keys:
            self.register_buffer(key, tensors[key], persistent=False)
        self.dim = int(tensors["shape"][1]) if self.sparse else int(self.dense.shape[1])
        if self.sparse and (self.indptr.dim() != 1 or int(tensors["shape"][0]) != len(self.indptr) - 1):
            raise ValueError("sparse feature rows: indptr does not match the recorded shape")

    @classmethod
    def from_matrix(cls, matrix) -> FeatureTable:
        """From a SciPy sparse matrix (kept sparse, CSR) or a dense array, as float32."""
        if sp.issparse(matrix):
            csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
            csr.sum_duplicates()  # canonical: sorted column indices, no repeats
            return cls(
                {
                    "indptr": torch.from_numpy(csr.indptr.astype(np.int64)),
                    "indices": torch.from_numpy(csr.indices.astype(np.int64)),
                    "values": torch.from_numpy(csr.data.astype(np.float32)),
                    "shape": torch.tensor(csr.shape, dtype=torch.int64),
                }
            )
        dense = np.asarray(matrix, dtype=np.float32)
        if dense.ndim != 2:
            raise ValueError(f"a feature matrix is 2-D, not of shape {dense.shape}")
        return cls({"dense": torch.tensor(dense)})

    def to_matrix(self):
        """The rows as a SciPy CSR matrix (sparse) or a NumPy array (dense), on the CPU."""
        if not self.sparse:
            return self.dense.detach().cpu().numpy().copy()
        parts = (self.values.cpu().numpy(), self.indices.cpu().numpy(), self.indptr.cpu().numpy())
        return sp.csr_matrix(parts, shape=(self.num_rows, self.dim))

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1 if self.sparse else len(self.dense)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The rows as saved: CSR parts and ``shape``, or ``dense``."""
        if not self.sparse:
            return {"dense": self.dense}
        shape = torch.tensor([self.num_rows, self.dim], dtype=torch.int64)
        return {**{key: getattr(self, key) for key in SPARSE_KEYS}, "shape": shape}

    def bag(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The CSR entries of ``rows`` (n,) as ``EmbeddingBag`` inputs: column ids, bag offsets, values."""
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        positions = torch.arange(int(lengths.sum()), device=rows.device)
        flat = positions + torch.repeat_interleave(starts - offsets, lengths)
        return self.indices[flat], offsets, self.values[flat]

    def root_mean_square_norm(self) -> float:
        """RMS of the non-empty rows' L2 norms (1 for L2-normalised features); scales the first layer."""
        if self.sparse:
            lengths = self.indptr[1:] - self.indptr[:-1]
            rows = torch.repeat_interleave(torch.arange(self.num_rows), lengths.cpu())
            squares = torch.zeros(self.num_rows).index_add_(0, rows, self.values.cpu().float() ** 2)
        else:
            squares = (self.dense.float() ** 2).sum(dim=1).cpu()
        squares = squares[squares > 0]
        return float(squares.mean().sqrt()) if len(squares) else 1.0

    def unused_columns(self) -> torch.Tensor:
        """(dim,) bool: the feature columns no row has a nonzero value in."""
        if self.sparse:
            nonzero = self.indices[self.values != 0].cpu()
            return torch.bincount(nonzero, minlength=self.dim) == 0
        return (self.dense == 0).all(dim=0).cpu()

    def appended(self, other: FeatureTable) -> FeatureTable:
        """A new table: these rows, then ``other``'s (same kind and dimension)."""
        if (other.sparse, other.dim) != (self.sparse, self.dim):
            raise ValueError("appended features must be of the same kind and dimension")
        if not self.sparse:
            return FeatureTable({"dense": torch.cat([self.dense, other.dense.to(self.dense)])})
        indptr = torch.cat([self.indptr, other.indptr[1:].to(self.indptr) + self.indptr[-1]])
        indices = torch.cat([self.indices, other.indices.to(self.indices)])
        values = torch.cat([self.values, other.values.to(self.values)])
        shape = torch.tensor([len(indptr) - 1, self.dim], dtype=torch.int64)
        return FeatureTable({"indptr": indptr, "indices": indices, "values": values, "shape": shape})

    def extra_repr(self) -> str:
        return f"rows={self.num_rows}, dim={self.dim}, sparse={self.sparse}"


class ContentProjection(nn.Module):
    """The trainable MLP from frozen features to the backbone's channels: ``Linear -> GELU -> Linear``.

    The first layer of sparse features is an ``EmbeddingBag`` weighted by the feature values (a sparse
    matrix product; TF-IDF vocabularies are large and rows have a handful of words). It starts N(0, 1/r²),
    r the RMS norm of the feature rows, so its outputs have unit variance whatever the feature scale, except
    the weights of features that none of the encoder's own items has (``unused``: a word that occurs only in
    cold-start target items, say), which start at **zero**: they get no gradient in pretraining either, so
    they add nothing to a new item's vector instead of random noise (and learn once a finetuning strategy
    trains the projection on items that have them).
    """

    def __init__(
        self,
        dim: int,
        channels: int,
        hidden: int,
        sparse: bool,
        feature_norm: float = 1.0,
        unused: torch.Tensor | None = None,
    ):
        super().__init__()
        self.sparse_features = sparse  # not ``sparse``: that names sparse-gradient tables (SparseAdam)
        if sparse:
            self.first = nn.EmbeddingBag(dim, hidden, mode="sum")
        else:
            self.first = nn.Linear(dim, hidden, bias=False)
        nn.init.normal_(self.first.weight, std=1.0 / max(feature_norm, 1e-12))
        if unused is not None:
            with torch.no_grad():
                if sparse:
                    self.first.weight[unused] = 0.0
                else:
                    self.first.weight[:, unused] = 0.0
        self.first_bias = nn.Parameter(torch.zeros(hidden))
        self.second = nn.Linear(hidden, channels)
        bound = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.second.weight, -bound, bound)
        nn.init.zeros_(self.second.bias)

    def forward(
        self, table: FeatureTable, rows: torch.Tensor, extra_first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Vectors (n, C) of feature rows ``rows`` (n,); ``extra_first`` (n, hidden) is added to the first
        layer's output (the cold-start head's weights for words the encoder never trained)."""
        if self.sparse_features:
            columns, offsets, values = table.bag(rows)
            first = self.first(columns, offsets, per_sample_weights=values.to(self.first.weight.dtype))
        else:
            first = self.first(table.dense[rows].to(self.first.weight.dtype))
        if extra_first is not None:
            first = first + extra_first.to(first.dtype)
        return self.second(F.gelu(first + self.first_bias))


class ContentItemEncoder(ItemEncoder):
    """Items by content (``with_ids=False``: ``text``) or content plus an ID row (``id+text``).

    ``features`` holds one row per item id, the four special-token rows first (their content is ignored).
    ``hidden`` is the MLP's width (default: ``channels``).
    """

    uses_content = True

    def __init__(
        self,
        num_items: int,
        channels: int,
        features: FeatureTable,
        *,
        hidden: int | None = None,
        with_ids: bool = False,
    ):
        super().__init__()
        self.num_items, self.channels = positive_size(num_items), channels
        if features.num_rows != num_items + NUM_SPECIAL_TOKENS:
            raise ValueError(
                f"features have {features.num_rows} rows, expected {num_items + NUM_SPECIAL_TOKENS} "
                f"({num_items} items and {NUM_SPECIAL_TOKENS} special tokens)"
            )
        self.features = features
        self.hidden = hidden or channels
        self.with_ids = with_ids
        self.special = nn.Parameter(trunc_normal_(torch.empty(NUM_SPECIAL_TOKENS, channels)))
        self.projection = ContentProjection(
            features.dim,
            channels,
            self.hidden,
            features.sparse,
            features.root_mean_square_norm(),
            unused=features.unused_columns(),
        )
        self.ids: nn.Embedding | None = None
        if with_ids:
            self.ids = nn.Embedding(num_items + NUM_SPECIAL_TOKENS, channels)
            trunc_normal_(self.ids.weight)
            # id+text starts as the ID model: the content part is zero at init (its last layer) and grows
            # where it helps. At its default scale the text vectors are ~15x the ID rows' (std 0.02) and
            # slowed pretraining down (ML-100K valid NDCG@10 0.083 against 0.106 for ID alone).
            nn.init.zeros_(self.projection.second.weight)
        # Adapters added with add_adapters(..., modules="item_encoder" | "both"): v + branch(v).
        self.adapters = nn.ModuleList()

    def content_vectors(
        self, table: FeatureTable, rows: torch.Tensor, extra_first: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Projected (and adapted) vectors (n, C) of feature rows ``rows`` of ``table``."""
        vectors = self.projection(table, rows, extra_first)
        for adapter in self.adapters:
            vectors = vectors + adapter(vectors)
        return vectors

    def vectors_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors (n, C) of item ids (n,), special tokens included."""
        special = ids < NUM_SPECIAL_TOKENS
        vectors = self.content_vectors(self.features, ids)
        if self.ids is not None:
            vectors = vectors + self.ids(ids)
        if bool(special.any()):
            rows = self.special[ids.clamp(max=NUM_SPECIAL_TOKENS - 1)].to(vectors.dtype)
            vectors = torch.where(special.unsqueeze(1), rows, vectors)
        return vectors

    def item_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, C): each distinct id in the batch is encoded once."""
        distinct, inverse = torch.unique(ids, return_inverse=True)
        return self.vectors_of(distinct)[inverse]

    def all_item_vectors(self) -> torch.Tensor:
        """Vectors (num_items, C) of every real item; row j is item id j + 4."""
        ids = torch.arange(NUM_SPECIAL_TOKENS, self.num_items + NUM_SPECIAL_TOKENS, device=self.device)
        return self.vectors_of(ids)

    def add_adapter(self, ratio: float) -> list[str]:
        """Add a bottleneck branch (zero at init) on the projected vectors; returns its tensor names."""
        from peterrec.model.adapters.bottleneck import PatchBranch

        branch = PatchBranch(self.channels, ratio).to(self.special.device)
        self.adapters.append(branch)
        index = len(self.adapters) - 1
        return [f"adapters.{index}.{name}" for name, _ in branch.named_parameters()]

    def make_output(self) -> ContentItemOutput:
        return ContentItemOutput(self)

    def make_target_head(
        self, num_target_items: int, features: FeatureTable | None = None
    ) -> ContentTargetHead:
        if features is None:
            raise ValueError(
                "a content item encoder scores target items from their features; pass the target items' "
                "features (the cold-start task reads them from the item file)"
            )
        if features.num_rows != num_target_items:
            raise ValueError(f"{features.num_rows} feature rows for {num_target_items} target items")
        return ContentTargetHead(self, features)

    def with_new_items(self, features: FeatureTable) -> None:
        """Append items (their feature rows) after the current ones, in place: zero ID rows, so they are
        represented by their content alone. Used to score items added after training."""
        self.features = self.features.appended(features.to(self.special.device))
        added = features.num_rows
        if self.ids is not None:
            self.ids = nn.Embedding.from_pretrained(with_zero_rows(self.ids.weight, added), freeze=False)
        self.num_items += added

    def fresh(self) -> ContentItemEncoder:
        return ContentItemEncoder(
            self.num_items, self.channels, self.features, hidden=self.hidden, with_ids=self.with_ids
        )

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, channels={self.channels}, with_ids={self.with_ids}"


class ContentItemOutput(nn.Module):
    """Next-item softmax over the encoder's items: ``hidden @ encoder.all_item_vectors().T + bias``.

    The encoder is referenced, not owned (its tensors belong to the backbone, and are saved there once).
    The bias starts at zero; items appended after training get a zero bias.
    """

    sparse = False

    def __init__(self, encoder: ContentItemEncoder):
        super().__init__()
        self._encoder = (encoder,)  # a tuple: not registered as a submodule
        self.bias = nn.Parameter(torch.zeros(encoder.num_items))

    @property
    def encoder(self) -> ContentItemEncoder:
        return self._encoder[0]

    def __deepcopy__(self, memo: dict) -> ContentItemOutput:
        """A copy with its own bias that still reads the same encoder (a next-item head made from the
        pretrained output must score through the backbone's encoder, adapters included)."""
        copy = ContentItemOutput(self.encoder)
        copy.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=self.bias.requires_grad)
        return copy

    @property
    def num_items(self) -> int:
        return len(self.bias)

    @property
    def channels(self) -> int:
        return self.encoder.channels

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.encoder.all_item_vectors().to(hidden.dtype), self.bias.to(hidden.dtype))

    def cross_entropy(
        self, hidden: torch.Tensor, columns: torch.Tensor, chunk_items: int | None = None
    ) -> torch.Tensor:
        from peterrec.model.exact_softmax import softmax_cross_entropy

        return softmax_cross_entropy(hidden, self.encoder.all_item_vectors(), self.bias, columns, chunk_items)

    def logits_for(self, hidden: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """Scores of the requested columns only: (N, C) with (S,) or (N, S) columns -> (N, S)."""
        distinct, inverse = torch.unique(columns, return_inverse=True)
        weight = self.encoder.vectors_of(distinct + NUM_SPECIAL_TOKENS)[inverse]
        return score_columns(hidden, weight, self.bias[columns], columns)

    def with_new_items(self, added: int) -> None:
        """Zero biases for ``added`` items appended to the encoder."""
        self.bias = with_zero_rows(self.bias, added)

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, tied to the content encoder"


class ContentTargetHead(nn.Module):
    """The content cold-start head: target items scored through the backbone's content encoder.

    ``scores = user @ vectors.T + bias``, the vectors computed by the (frozen or adapted) encoder from the
    target items' own features; with an ``id+text`` encoder each target item also gets a new ID row
    (``ids``, zero at init, so the head starts from content alone). The bias starts at zero.

    ``new_words`` are the first-layer weights of the sparse features (words) that the target items have and
    none of the encoder's own items had: the pretrained encoder holds zeros there, never trained
    (:class:`ContentProjection`). They are new parameters of the target domain, like the head, so every
    strategy trains them (zero at init): a frozen encoder then still learns what the target-only words
    (ML-100K's "Children's", "Animation", new title words) mean, without changing one pretrained weight.
    At init the head is what the pretrained model scores zero-shot.
    """

    def __init__(self, encoder: ContentItemEncoder, features: FeatureTable):
        super().__init__()
        self._encoder = (encoder,)
        self.features = features
        self.num_items = features.num_rows
        self.bias = nn.Parameter(torch.zeros(self.num_items))
        self.ids: nn.Parameter | None = None
        if encoder.with_ids:
            self.ids = nn.Parameter(torch.zeros(self.num_items, encoder.channels))
        self.new_words: nn.Parameter | None = None
        column_map = torch.full((features.dim,), -1, dtype=torch.int64)
        if features.sparse and encoder.features.sparse:
            new = torch.nonzero(encoder.features.unused_columns() & ~features.unused_columns()).flatten()
            column_map[new] = torch.arange(len(new))
            if len(new):
                self.new_words = nn.Parameter(torch.zeros(len(new), encoder.hidden))
        self.register_buffer("column_map", column_map.to(self.bias.device), persistent=False)

    @property
    def encoder(self) -> ContentItemEncoder:
        return self._encoder[0]

    def vectors_of(self, columns: torch.Tensor) -> torch.Tensor:
        vectors = self.encoder.content_vectors(self.features, columns, self._new_word_activations(columns))
        return vectors if self.ids is None else vectors + self.ids[columns]

    def _new_word_activations(self, columns: torch.Tensor) -> torch.Tensor | None:
        """(n, hidden): the ``new_words`` weights summed over each item's target-only words, or None."""
        if self.new_words is None:
            return None
        words, offsets, values = self.features.bag(columns)
        mapped = self.column_map[words]
        values = values.to(self.new_words.dtype) * (mapped >= 0)
        return F.embedding_bag(
            mapped.clamp(min=0), self.new_words, offsets, mode="sum", per_sample_weights=values
        )

    def forward(self, user: torch.Tensor) -> torch.Tensor:
        columns = torch.arange(self.num_items, device=user.device)
        return F.linear(user, self.vectors_of(columns).to(user.dtype), self.bias.to(user.dtype))

    def logits_for(self, user: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        distinct, inverse = torch.unique(columns, return_inverse=True)
        weight = self.vectors_of(distinct)[inverse]
        return score_columns(user, weight, self.bias[columns], columns)

    def with_new_items(self, features: FeatureTable) -> None:
        """Append target items scored from their content alone (zero bias and ID rows)."""
        added = features.num_rows
        self.features = self.features.appended(features.to(self.bias.device))
        self.num_items += added
        self.bias = with_zero_rows(self.bias, added)
        if self.ids is not None:
            self.ids = with_zero_rows(self.ids, added)

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, ids={self.ids is not None}"


def _content_factory(with_ids: bool):
    def build(
        num_items: int,
        channels: int,
        sparse: bool = False,
        features: FeatureTable | None = None,
        hidden: int | None = None,
    ) -> ContentItemEncoder:
        if features is None:
            raise ValueError("a content item encoder needs the items' features (model.text in the config)")
        if sparse:
            raise ValueError(
                "model.sparse_embedding applies to ID tables; a content encoder has none to spare"
            )
        return ContentItemEncoder(num_items, channels, features, hidden=hidden, with_ids=with_ids)

    return build


register_item_encoder("text", _content_factory(with_ids=False), uses_content=True)
register_item_encoder("id+text", _content_factory(with_ids=True), uses_content=True)

__all__ = [
    "ContentItemEncoder",
    "ContentItemOutput",
    "ContentProjection",
    "ContentTargetHead",
    "FeatureTable",
]
