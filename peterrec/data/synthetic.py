"""A small synthetic two-domain data set with planted structure, for the demo and the tests.

Every user has a hidden group ``g`` (never written). Groups come in *partner pairs* ``(2p, 2p+1)``:

- **Source items** are split into clusters; pair ``p`` prefers a window of clusters that overlaps the next
  pair's window by one cluster. Both partners draw from the same item pool, so their *bags* of items look
  alike, but each group walks its pool along its own random cycle (a group-specific Markov chain). The order
  of a user's clicks therefore reveals the group much better than the bag of clicked items does.
- A click follows the group's chain with probability ``P_CHAIN``, jumps to a uniform item of the pool with
  ``P_JUMP``, and otherwise is drawn from a global Zipf popularity over all source items (so a popularity
  baseline is non-trivial, and a first-order Markov predictor is clearly better).
- **Target clicks** (a disjoint vocabulary) come mostly from a group-specific window of target items;
  partners' windows overlap, so the source sequence predicts the target clicks, best when read in order.
- **Labels**: gender is a function of the group with ``GENDER_FLIP`` flips; partners have different genders
  in half of the pairs, which caps what a bag-of-items model can reach. The age bucket is a function of the
  group, replaced by a uniform random bucket with probability ``AGE_RESAMPLE``.

All randomness comes from ``numpy.random.Generator(PCG64(seed)).random``, whose stream is fixed by the bit
generator, and is turned into integers and choices here (not by ``Generator.integers``/``choice``, whose
algorithms numpy may change), so the files are byte-identical for a seed across numpy versions.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

P_CHAIN = 0.70  # follow the group's item chain
P_JUMP = 0.10  # jump to a uniform item of the group's pool
# the remaining 0.20 is popularity noise: a global Zipf draw over all source items
ZIPF_EXPONENT = 1.0
P_TARGET_PREFERRED = 0.80  # a target click comes from the group's preferred window
GENDER_FLIP = 0.15
AGE_RESAMPLE = 0.25
TIE_RATE = 0.02  # share of clicks with the same timestamp as the previous click of the user
ODD_ID_RATE = 0.05  # share of source items whose id contains spaces, quotes, commas or parentheses

AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-49", "50+")
# Partner pairs (2p, 2p+1) share a source pool: pairs 0 and 2 (mod 4) split by gender, pairs 1 and 3 do not.
_GENDER_OF_PAIR = (("F", "M"), ("F", "F"), ("M", "F"), ("M", "M"))
_AGE_OF_GROUP = (0, 1, 1, 2, 3, 2, 4, 3)
_ODD_ID_TEMPLATES = (
    'Movie "{n}" ({year})',
    "it's, item {n}",
    "The (Director's) Cut {n}",
    'Say "Hello", World {n}',
    "Item {n} (Special Edition)",
)
THEMES = ("noir", "western", "space", "romance", "heist", "musical", "samurai", "zombie")
FILLER_GENRES = ("drama", "comedy")
TITLE_WORDS = ("The", "A", "Return of", "Night of", "Tales of", "Legend of")
P_THEME_NOISE = 0.2  # a target item's theme word is replaced by a random one
_START_TIME = 978_300_000  # 2001-01-01, MovieLens-like epoch seconds
_SPAN_SECONDS = 30_000_000
_HEADER = ("user_id", "item_id", "timestamp")


@dataclass(frozen=True)
class SampleSizes:
    """Sizes of the generated data set; ``generate_sample(**sizes)`` overrides any of them."""

    n_users: int = 2000
    n_source_items: int = 300
    n_target_items: int = 100
    n_target_users: int = 900
    n_labelled: int = 400
    n_groups: int = 8
    n_clusters: int = 12
    min_len: int = 15
    max_len: int = 60
    mean_extra_len: float = 20.0  # scale of the truncated exponential added to min_len (mean length ~30)
    min_target_len: int = 3
    max_target_len: int = 12
    target_window: int = 20  # preferred target items per group

    def __post_init__(self) -> None:
        if self.n_groups < 2 or self.n_groups % 2:
            raise ValueError(f"n_groups must be an even number >= 2, got {self.n_groups}")
        pairs = self.n_groups // 2
        if self.n_clusters < pairs or self.n_source_items < self.n_clusters:
            raise ValueError("need n_source_items >= n_clusters >= n_groups / 2")
        if not 1 <= self.min_len <= self.max_len or not 1 <= self.min_target_len <= self.max_target_len:
            raise ValueError("sequence length bounds must satisfy 1 <= min <= max")
        if not self.n_target_users <= self.n_users or not self.n_labelled <= self.n_users:
            raise ValueError("n_target_users and n_labelled cannot exceed n_users")
        if not 1 <= self.target_window <= self.n_target_items:
            raise ValueError("target_window must be between 1 and n_target_items")


@dataclass
class SyntheticSample:
    """The simulated data in memory; ``groups`` is the hidden truth and is never written to disk."""

    sizes: SampleSizes
    source_item_ids: list[str]
    target_item_ids: list[str]
    user_ids: list[str]
    groups: np.ndarray  # (n_users,) hidden group of each user
    source: list[tuple[str, str, int]]  # (user_id, item_id, timestamp) rows in file order
    target: list[tuple[str, str, int]]
    labels: list[tuple[str, str, str]]  # (user_id, gender, age)
    pools: list[np.ndarray] = field(default_factory=list)  # source item indices of each group's pool
    target_prefs: list[np.ndarray] = field(default_factory=list)  # preferred target items of each group


def _randint(rng: np.random.Generator, n: int) -> int:
    """Uniform integer in [0, n) from one ``random()`` draw."""
    return min(int(rng.random() * n), n - 1)


def _permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """A uniform random permutation of range(n) (argsort of uniform keys)."""
    return np.argsort(rng.random(n), kind="stable")


def _draw(cdf: np.ndarray, u: float) -> int:
    """Index drawn from an unnormalised cumulative distribution with the uniform number ``u``."""
    return min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(cdf) - 1)


def _zipf_cdf(rng: np.random.Generator, n: int) -> np.ndarray:
    """Cumulative Zipf popularity over n items whose popularity ranks are a random permutation."""
    ranks = _permutation(rng, n)  # ranks[i] = popularity rank of item i
    return np.cumsum(1.0 / (ranks + 1.0) ** ZIPF_EXPONENT)


def _source_item_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``s0001``-style ids, with about ODD_ID_RATE of them replaced by awkward, CSV-quoting strings."""
    width = max(4, len(str(n)))
    ids = [f"s{i + 1:0{width}d}" for i in range(n)]
    n_odd = max(1, round(ODD_ID_RATE * n))
    for j, i in enumerate(sorted(_permutation(rng, n)[:n_odd].tolist())):
        template = _ODD_ID_TEMPLATES[j % len(_ODD_ID_TEMPLATES)]
        ids[i] = template.format(n=i + 1, year=1960 + (i * 7) % 60)
    return ids


def _pools_and_chains(rng: np.random.Generator, sizes: SampleSizes) -> tuple[list[np.ndarray], np.ndarray]:
    """Item pool of each group and a successor table ``succ[g, item]`` (-1 where item is not in g's pool)."""
    pairs = sizes.n_groups // 2
    cluster_of = np.empty(sizes.n_source_items, dtype=np.int64)
    cluster_of[_permutation(rng, sizes.n_source_items)] = np.arange(sizes.n_source_items) % sizes.n_clusters
    step = sizes.n_clusters // pairs
    width = min(step + 1, sizes.n_clusters)  # one cluster shared with the next pair
    pools: list[np.ndarray] = []
    succ = np.full((sizes.n_groups, sizes.n_source_items), -1, dtype=np.int64)
    for g in range(sizes.n_groups):
        p = g // 2
        clusters = [(p * step + k) % sizes.n_clusters for k in range(width)]
        pool = np.flatnonzero(np.isin(cluster_of, clusters))
        cycle = pool[_permutation(rng, len(pool))]  # partners: same pool, different order
        succ[g, cycle] = np.roll(cycle, -1)
        pools.append(pool)
    return pools, succ


def _length(rng: np.random.Generator, low: int, high: int, scale: float) -> int:
    """``low`` plus a truncated exponential of the given scale, capped at ``high``."""
    span = high - low
    u = rng.random()
    extra = -scale * math.log(1.0 - u * (1.0 - math.exp(-(span + 1) / scale)))
    return low + min(int(extra), span)


def _timestamps(rng: np.random.Generator, start: int, n: int) -> list[int]:
    """n non-decreasing timestamps from ``start``; about TIE_RATE of the gaps are zero (ties)."""
    times, t = [], start
    for k in range(n):
        if k > 0:
            u_tie, u_gap = rng.random(2)
            t += 0 if u_tie < TIE_RATE else 30 + int(-600.0 * math.log(1.0 - u_gap))
        times.append(t)
    return times


def simulate_sample(seed: int = 0, **sizes: int | float) -> SyntheticSample:
    """Simulate the data set in memory (see the module docstring for the planted structure)."""
    sz = SampleSizes(**sizes)
    rng = np.random.Generator(np.random.PCG64(seed))

    source_ids = _source_item_ids(rng, sz.n_source_items)
    target_ids = [f"t{i + 1:0{max(3, len(str(sz.n_target_items)))}d}" for i in range(sz.n_target_items)]
    user_ids = [f"u{i + 1:0{max(5, len(str(sz.n_users)))}d}" for i in range(sz.n_users)]

    pools, succ = _pools_and_chains(rng, sz)
    source_pop = _zipf_cdf(rng, sz.n_source_items)
    target_pop = _zipf_cdf(rng, sz.n_target_items)
    target_order = _permutation(rng, sz.n_target_items)
    target_offset = sz.n_target_items / sz.n_groups
    target_prefs = [
        target_order[(int(g * target_offset) + np.arange(sz.target_window)) % sz.n_target_items]
        for g in range(sz.n_groups)
    ]
    groups = np.array([_randint(rng, sz.n_groups) for _ in range(sz.n_users)], dtype=np.int64)
    has_target = np.zeros(sz.n_users, dtype=bool)
    has_target[_permutation(rng, sz.n_users)[: sz.n_target_users]] = True
    labelled = np.sort(_permutation(rng, sz.n_users)[: sz.n_labelled])

    source: list[tuple[str, str, int]] = []
    target: list[tuple[str, str, int]] = []
    for u, user in enumerate(user_ids):
        g, pool = int(groups[u]), pools[groups[u]]
        n = _length(rng, sz.min_len, sz.max_len, sz.mean_extra_len)
        draws = rng.random((n, 2))
        item = int(pool[_randint(rng, len(pool))])
        items = [item]
        for k in range(1, n):
            kind, pick = draws[k]
            if kind < P_CHAIN and succ[g, item] >= 0:
                item = int(succ[g, item])
            elif kind < P_CHAIN + P_JUMP:  # a jump, or a chain step from an off-pool item
                item = int(pool[min(int(pick * len(pool)), len(pool) - 1)])
            else:
                item = _draw(source_pop, pick)
            items.append(item)
        times = _timestamps(rng, _START_TIME + _randint(rng, _SPAN_SECONDS), n)
        source.extend((user, source_ids[i], t) for i, t in zip(items, times, strict=True))
        if has_target[u]:
            m = sz.min_target_len + _randint(rng, sz.max_target_len - sz.min_target_len + 1)
            picks = [
                int(target_prefs[g][_randint(rng, sz.target_window)])
                if rng.random() < P_TARGET_PREFERRED
                else _draw(target_pop, rng.random())
                for _ in range(m)
            ]
            start = times[-1] + 86_400 + _randint(rng, 30 * 86_400)
            target.extend(
                (user, target_ids[i], t) for i, t in zip(picks, _timestamps(rng, start, m), strict=True)
            )

    labels: list[tuple[str, str, str]] = []
    for u in labelled.tolist():
        g = int(groups[u])
        gender = _GENDER_OF_PAIR[(g // 2) % 4][g % 2]
        if rng.random() < GENDER_FLIP:
            gender = "M" if gender == "F" else "F"
        age = _AGE_OF_GROUP[g % len(_AGE_OF_GROUP)]
        if rng.random() < AGE_RESAMPLE:
            age = _randint(rng, len(AGE_BUCKETS))
        labels.append((user_ids[u], gender, AGE_BUCKETS[age]))

    return SyntheticSample(
        sz, source_ids, target_ids, user_ids, groups, source, target, labels, pools, target_prefs
    )


def item_texts(sample: SyntheticSample, seed: int = 0) -> list[tuple[str, str, str]]:
    """``(item_id, title, genres)`` of every source and target item, for the content (TransRec) encoders.

    A source item's genres are the theme words of the partner pairs whose pool holds it; a target item's,
    those of the pairs that prefer it, each replaced by a random theme with probability ``P_THEME_NOISE``;
    every item also gets one filler genre at random. So the text of a target item tells which users click it,
    through words that also describe source items: content transfers across the two vocabularies. Drawn
    from their own stream (``[seed, 7]``), so the click files do not change.
    """
    rng = np.random.Generator(np.random.PCG64([seed, 7]))
    pairs = sample.sizes.n_groups // 2
    themes = [THEMES[p] if p < len(THEMES) else f"theme{p}" for p in range(pairs)]

    def text(item_id: str, pair_set: set[int], noisy: bool) -> tuple[str, str, str]:
        words = []
        for p in sorted(pair_set):
            if noisy and rng.random() < P_THEME_NOISE:
                p = _randint(rng, pairs)
            words.append(themes[p])
        words.append(FILLER_GENRES[_randint(rng, len(FILLER_GENRES))])
        return (
            item_id,
            f"{TITLE_WORDS[_randint(rng, len(TITLE_WORDS))]} {item_id}",
            " ".join(dict.fromkeys(words)),
        )

    rows = []
    for i, item_id in enumerate(sample.source_item_ids):
        pair_set = {g // 2 for g, pool in enumerate(sample.pools) if i in set(pool.tolist())}
        rows.append(text(item_id, pair_set, noisy=False))
    for t, item_id in enumerate(sample.target_item_ids):
        pair_set = {g // 2 for g, prefs in enumerate(sample.target_prefs) if t in set(prefs.tolist())}
        rows.append(text(item_id, pair_set, noisy=True))
    return rows


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Write a UTF-8 CSV with ``\\n`` line endings through a temp file and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_sample(out_dir: str | Path, seed: int = 0, **sizes: int | float) -> dict:
    """Write ``source.csv``, ``target.csv``, ``labels.csv`` and ``items.csv`` (item text) into ``out_dir`` and
    return their counts.

    ``sizes`` overrides fields of :class:`SampleSizes` (an unknown name is a ``TypeError``). The same seed and
    sizes always give byte-identical files.
    """
    known = {f.name for f in fields(SampleSizes)}
    unknown = sorted(set(sizes) - known)
    if unknown:
        raise TypeError(f"unknown size(s) {unknown}; known: {sorted(known)}")
    sample = simulate_sample(seed, **sizes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "source.csv", _HEADER, sample.source)
    _write_csv(out / "target.csv", _HEADER, sample.target)
    _write_csv(out / "labels.csv", ("user_id", "gender", "age"), sample.labels)
    _write_csv(out / "items.csv", ("item_id", "title", "genres"), item_texts(sample, seed))

    def n_ties(rows: list[tuple[str, str, int]]) -> int:
        return sum(a[0] == b[0] and a[2] == b[2] for a, b in zip(rows, rows[1:], strict=False))

    return {
        "seed": seed,
        "sizes": asdict(sample.sizes),
        "source_users": len({r[0] for r in sample.source}),
        "source_items": len({r[1] for r in sample.source}),
        "source_clicks": len(sample.source),
        "source_ties": n_ties(sample.source),
        "odd_source_item_ids": sum(re.fullmatch(r"s\d+", i) is None for i in sample.source_item_ids),
        "target_users": len({r[0] for r in sample.target}),
        "target_items": len({r[1] for r in sample.target}),
        "target_clicks": len(sample.target),
        "target_ties": n_ties(sample.target),
        "labelled_users": len(sample.labels),
    }
