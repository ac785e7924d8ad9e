"""Synthetic RetailRocket data: the real files' exact format and shape, plus a learnable signal.

``synthesize`` writes ``events.csv``, ``item_properties_part1.csv``,
``item_properties_part2.csv`` and ``category_tree.csv`` in the Kaggle format (see
DESIGN.md section 3).  At ``scale=1`` the counts and ratios match the real dataset's figures;
``scale`` divides the numbers of visitors, items, events and property rows, while the time
span (138 days), the weekly property snapshots and the category tree (1,669 nodes) stay the
same.  Part 1 of the property log holds the first ``round(10,999,999 * scale)`` data rows, so
both parts have rows at every scale, as in the real files.

How visitors behave (the signal a recommender can learn):

* category popularity is Zipf-like; every visitor prefers 1-3 categories (the second and third
  are often siblings of the first) and a "taste" position inside each category, so the items
  they view are close to each other in the category's item order;
* item popularity is lognormal (sigma 2) within its category and drifts over time: items are
  launched and fade, go in and out of stock, and every item's appeal takes a weekly random
  walk, so recent popularity is a (slightly) better guess than all-time popularity;
* visitors re-view items (also across sessions), add to cart items they viewed and buy items
  they carted; visitors with more events and more sessions convert more, and multi-session
  visitors often span weeks, so many add-to-carts of the last week come from returning
  visitors and are predictable from what they viewed before.

Everything is vectorised with numpy; Python loops run only over tree levels, weekly
snapshots/epochs, value kinds and output chunks.  The same ``seed`` gives byte-identical files.

Why one module of this size: the generator's steps draw from one random stream over shared
intermediate arrays; byte-identical output for a seed depends on their order, which one
module keeps in view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from recsys import columns as C
from recsys.arrays import rank_in_runs, weekday
from recsys.columns import DAY_MS, HOUR_MS
from recsys.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

WEEK_MS = 7 * DAY_MS
START_MS = 1_430_622_000_000  # 2015-05-03 03:00 UTC
END_MS = START_MS + 138 * DAY_MS  # 2015-09-18 03:00 UTC
SNAPSHOT0_MS = 1_431_226_800_000  # first weekly property snapshot, Sunday 2015-05-10 03:00 UTC
N_SNAPSHOTS = 19
SNAPSHOTS_MS = SNAPSHOT0_MS + WEEK_MS * np.arange(N_SNAPSHOTS, dtype=np.int64)
#: epoch 0 = the week before the first snapshot, epoch k+1 = [snapshot k, snapshot k+1)
N_EPOCHS = N_SNAPSHOTS + 1

# real counts at scale 1 (DESIGN.md section 3)
VISITORS = 1_407_580
ITEMS = 417_053
ITEM_ID_RANGE = 466_867
DUPLICATE_EVENTS = 460
# category tree: nodes per level and how many of them have children -> 1,669 nodes,
# 25 roots, 362 inner nodes, 1,307 leaves, depth 5
TREE_LEVELS = (25, 200, 800, 500, 144)
TREE_INNER = (25, 150, 150, 37)
CATEGORY_ID_RANGE = 1_699

# visitor activity, calibrated so that the totals match the real figures
P_SINGLE_VIEW = 0.728
VIEWS_ALPHA, VIEWS_C, MAX_VIEWS = 1.65, 1.86, 1_000
CART_ONLY_SHARE = 0.0024  # visitors whose only events are add-to-carts (and purchases)
CART_SHARE = 0.0268
BUY_GIVEN_CART = 0.31
CART_VIEWS_EXPONENT = 0.5  # cart probability grows with the number of views
MULTI_SESSION_SHARE = 0.13
CART_MULTI_SESSION = 4.0  # multi-session visitors add to cart more ...
BUY_MULTI_SESSION = 1.55  # ... and buy what they carted more often
SESSION_GAP_MIN_MS = 45 * 60_000  # > 30 min even after carts/purchases are slotted in
SHORT_GAP_SHARE = 0.35  # next session a few hours later; else some days later
GAP_DAYS_P = 0.05  # days until the next session ~ geometric(GAP_DAYS_P)
EXTRA_SESSIONS = 1.05  # multi-session visitors: 2 + Poisson(EXTRA_SESSIONS * log(views))
END_MARGIN_MS = 10 * 60_000  # room after a visitor's last view for add-to-carts and purchases

# item choice
CATEGORY_ZIPF = 1.0
ITEMS_PER_CATEGORY_EXP = 0.6  # category size grows with popularity**0.6
ITEMS_PER_CATEGORY = 336
MIN_FILLED_CATEGORIES = 25
ITEM_SIGMA = 2.0
EVERGREEN_SHARE = 0.3  # items whose popularity does not fade
LIFE_DAYS = (10, 60)  # e-folding time of the popularity of the other items
WEEKLY_DRIFT = 0.3  # sd of the weekly random walk of every item's log popularity
P_REVIEW = 0.3  # a view repeats an item the visitor viewed before
P_ANYWHERE = 0.05  # a view of any item of the chosen category, whatever its popularity
P_EXPLORE = 0.05  # a view outside the visitor's preferred categories
P_SIBLING = 0.6  # second/third preferred category is a sibling of the first
TASTE_WINDOW = 0.08  # half-width of the taste window, share of the category's items
MIN_WINDOW = 6
P_CART_VIEWED = 0.92  # add-to-cart of an item the visitor viewed (else a new one)
UNAVAILABLE_WEIGHT = 0.1

# item properties
N_PROPERTY_NAMES = 1_102
N_STATIC_UNIVERSAL = 8
DYNAMIC_CHANGE = (0.5, 0.35, 0.25)  # per-snapshot change probability of 3 universal properties
CATEGORY_ROWS, AVAILABLE_ROWS, PROPERTY_ROWS = 1.9, 3.6, 48.6  # per item
P_AVAILABLE = 0.6
WRITE_CHUNK = 1_000_000


@dataclass
class _Catalogue:
    """Items in category order (items of one category are contiguous, in taste order)."""

    item_ids: np.ndarray  # int64 item id per position
    category: np.ndarray  # int64 category index per position
    cat_start: np.ndarray  # first position of each category
    cat_count: np.ndarray  # items per category
    cat_pop: np.ndarray  # probability that a visitor prefers the category
    cum_weight: np.ndarray  # (N_EPOCHS, n_items + 1) cumulative item weights, 0 first
    first_snapshot: np.ndarray  # snapshot at which the item enters the property log
    available: np.ndarray  # (n_items, N_SNAPSHOTS) bool


def synthesize(
    out_dir: Path, scale: float = 1.0, seed: int = 0, progress: bool = True
) -> dict[str, Path]:
    """Write the four RetailRocket files of a synthetic shop into ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder to write into (created if missing; existing files are overwritten).
    scale
        1.0 reproduces the real dataset's size (2.76M events, 20.3M property rows); smaller
        values divide the counts and keep the shape.
    seed
        Seed of the numpy random generator; equal seeds give byte-identical files.
    progress
        Show a progress bar.

    Returns
    -------
    dict[str, Path]
        File name (``events.csv``, ...) -> path written.
    """
    if not 0 < scale <= 10:
        raise ConfigurationError(f"scale must be in (0, 10], got {scale}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_visitors = max(20, round(VISITORS * scale))
    n_items = max(50, round(ITEMS * scale))
    with tqdm(total=4, desc="synthesize", unit="step", disable=not progress) as bar:
        cat_ids, parents = _category_tree(rng)
        catalogue = _catalogue(rng, n_items, scale, len(cat_ids))
        bar.update()
        events = _events(rng, n_visitors, catalogue, parents)
        bar.update()
        paths = {name: out_dir / name for name in (C.EVENTS_FILE, *C.PROPERTIES_FILES)}
        paths[C.CATEGORY_TREE_FILE] = out_dir / C.CATEGORY_TREE_FILE
        _write_tree(paths[C.CATEGORY_TREE_FILE], cat_ids, parents, rng)
        _write_events(paths[C.EVENTS_FILE], events, scale, rng)
        bar.update()
        log = _property_log(rng, catalogue, parents)
        bar.update()
    split = min(max(1, round(C.PROPERTIES_PART1_ROWS * scale)), len(log.snapshot) - 1)
    parts = [paths[name] for name in C.PROPERTIES_FILES]
    _write_properties(rng, parts, split, log, cat_ids, progress)
    logger.info("synthetic data (scale %s, seed %s) written to %s", scale, seed, out_dir)
    return paths


# --------------------------------------------------------------------------- catalogue


def _category_tree(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Category ids and parent positions (-1 for roots), level by level."""
    ids = rng.choice(CATEGORY_ID_RANGE, sum(TREE_LEVELS), replace=False).astype(np.int64)
    parents = np.full(len(ids), -1, dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(TREE_LEVELS)])
    for level in range(1, len(TREE_LEVELS)):
        # the first TREE_INNER nodes of the level above get children: one each, the rest by
        # Zipf-like fan-out
        pool = np.arange(bounds[level - 1], bounds[level - 1] + TREE_INNER[level - 1])
        fan = 1.0 / np.arange(1, len(pool) + 1)
        extra = rng.choice(len(pool), TREE_LEVELS[level] - len(pool), p=fan / fan.sum())
        assign = rng.permutation(np.concatenate([np.arange(len(pool)), extra]))
        parents[bounds[level] : bounds[level + 1]] = pool[assign]
    return ids, parents


def _catalogue(rng: np.random.Generator, n_items: int, scale: float, n_cat: int) -> _Catalogue:
    """Items grouped by category, their popularity per epoch and their availability."""
    pop = (rng.permutation(n_cat) + 1.0) ** -CATEGORY_ZIPF
    # items fill as many categories as keeps ~ITEMS_PER_CATEGORY of them per category (~1,240
    # categories at scale 1, as in the real data): how skewed item exposure is depends on
    # items per category, so the item long tail keeps its shape at small scales
    n_filled = int(np.clip(round(n_items / ITEMS_PER_CATEGORY), MIN_FILLED_CATEGORIES, n_cat))
    filled = rng.choice(n_cat, n_filled, replace=False, p=pop / pop.sum())
    size = np.zeros(n_cat)
    size[filled] = pop[filled] ** ITEMS_PER_CATEGORY_EXP
    category = np.sort(rng.choice(n_cat, n_items, p=size / size.sum()))
    count = np.bincount(category, minlength=n_cat)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    pop = np.where(count > 0, pop, 0.0)
    id_range = max(n_items, round(ITEM_ID_RANGE * scale))
    item_ids = rng.choice(id_range, n_items, replace=False).astype(np.int64)

    # popularity over time: some items are evergreen, the others launch somewhere in
    # [start - 60 days, end] and fade with a life time drawn from LIFE_DAYS
    base = rng.lognormal(0.0, ITEM_SIGMA, n_items)
    evergreen = rng.random(n_items) < EVERGREEN_SHARE
    launch = np.where(
        evergreen,
        START_MS - 90 * DAY_MS,
        rng.integers(START_MS - 60 * DAY_MS, END_MS, n_items),
    )
    life = rng.uniform(*LIFE_DAYS, n_items) * DAY_MS
    first_snapshot = np.clip((launch - SNAPSHOT0_MS) // WEEK_MS, 0, N_SNAPSHOTS - 1)

    available = np.empty((n_items, N_SNAPSHOTS), dtype=bool)
    available[:, 0] = rng.random(n_items) < P_AVAILABLE
    # flip probabilities with stationary share P_AVAILABLE and AVAILABLE_ROWS rows per item
    flips = (AVAILABLE_ROWS - 1) / (N_SNAPSHOTS - 1 - first_snapshot).mean()
    to_off = flips / (2 * P_AVAILABLE)
    to_on = to_off * P_AVAILABLE / (1 - P_AVAILABLE)
    for k in range(1, N_SNAPSHOTS):
        u = rng.random(n_items)
        prev = available[:, k - 1]
        available[:, k] = np.where(prev, u >= to_off, u < to_on)

    edges = np.concatenate([[START_MS], SNAPSHOTS_MS, [END_MS]])
    mid = (edges[:-1] + edges[1:]) / 2
    age = mid[:, None] - launch[None, :]
    fade = np.where(evergreen[None, :], 1.0, np.exp(-np.maximum(age, 0) / life[None, :]))
    fade = np.where(age < 0, 1e-3, np.maximum(fade, 0.02))
    in_stock = np.concatenate([available[:, :1], available], axis=1).T
    # and every item's appeal takes a weekly random walk
    walk = np.cumsum(rng.normal(0, WEEKLY_DRIFT, (N_EPOCHS, n_items)), axis=0)
    weight = base[None, :] * np.exp(walk) * fade * np.where(in_stock, 1.0, UNAVAILABLE_WEIGHT)
    cum = np.zeros((N_EPOCHS, n_items + 1))
    np.cumsum(weight, axis=1, out=cum[:, 1:])
    return _Catalogue(
        item_ids, category, start, count, pop / pop.sum(), cum, first_snapshot, available
    )


# --------------------------------------------------------------------------- events


def _segment_rank(groups: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Rank (0, 1, ...) of each element by ``key`` within its group."""
    order = np.lexsort((key, groups))
    rank = np.empty(len(key), dtype=np.int64)
    rank[order] = rank_in_runs(groups[order])
    return rank


def _siblings(parents: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Categories grouped by parent: order and the group bounds of each category."""
    by_parent = np.lexsort((np.arange(len(parents)), parents))
    group = parents[by_parent]
    where = np.empty(len(parents), dtype=np.int64)
    where[by_parent] = np.arange(len(parents))
    start = np.searchsorted(group, group, side="left")[where]
    end = np.searchsorted(group, group, side="right")[where]
    return by_parent, start, end


def _sample_times(rng: np.random.Generator, n: int) -> np.ndarray:
    """Times with the real hour-of-day (peak 00-04 UTC) and weekday (Tuesday) pattern."""
    hours = START_MS + HOUR_MS * np.arange((END_MS - START_MS) // HOUR_MS, dtype=np.int64)
    hour_of_day = (hours // HOUR_MS) % 24
    weekday_profile = np.array([1.02, 1.14, 1.02, 0.98, 0.92, 0.88, 0.96])  # Monday first
    w = (1 + 0.45 * np.cos(2 * np.pi * (hour_of_day - 2) / 24)) * weekday_profile[weekday(hours)]
    picked = rng.choice(len(hours), n, p=w / w.sum())
    return hours[picked] + rng.integers(0, HOUR_MS, n)


def _preferences(
    rng: np.random.Generator, n: int, cat: _Catalogue, parents: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """1-3 preferred categories per visitor and their cumulative choice weights."""
    n_cat = len(parents)
    first = rng.choice(n_cat, n, p=cat.cat_pop)
    # sibling draw: categories grouped by parent, choose within the group by popularity
    by_parent, group_start, group_end = _siblings(parents)
    cum = np.concatenate([[0.0], np.cumsum(cat.cat_pop[by_parent])])
    first2 = np.repeat(first, 2)
    lo, hi = cum[group_start[first2]], cum[group_end[first2]]
    sib = np.searchsorted(cum, lo + rng.random(len(first2)) * (hi - lo), side="right") - 1
    sib = by_parent[np.clip(sib, group_start[first2], group_end[first2] - 1)]
    other = rng.choice(n_cat, 2 * n, p=cat.cat_pop)
    more = np.where(rng.random(2 * n) < P_SIBLING, sib, other).reshape(n, 2)
    prefs = np.column_stack([first, more])
    n_pref = rng.choice([1, 2, 3], n, p=[0.45, 0.35, 0.2])
    w = np.array([1.0, 0.5, 0.3])[None, :] * (np.arange(3)[None, :] < n_pref[:, None])
    return prefs, np.cumsum(w, axis=1)


def _pick_items(
    rng: np.random.Generator,
    cat: _Catalogue,
    visitor: np.ndarray,
    ts: np.ndarray,
    prefs: np.ndarray,
    pref_cum: np.ndarray,
    taste: np.ndarray,
) -> np.ndarray:
    """Positions of new items for visitors at times: preferred category, near taste, popular."""
    n = len(visitor)
    cw = pref_cum[visitor]
    slot = (rng.random(n)[:, None] * cw[:, -1:] >= cw).sum(axis=1)
    category = prefs[visitor, slot]
    explore = rng.random(n) < P_EXPLORE
    category[explore] = rng.choice(len(cat.cat_pop), int(explore.sum()), p=cat.cat_pop)
    count, start = cat.cat_count[category], cat.cat_start[category]
    half = np.maximum(np.ceil(TASTE_WINDOW * count), MIN_WINDOW // 2).astype(np.int64)
    jitter = rng.normal(0, 0.02, n)
    centre = start + np.clip(taste[visitor] + jitter, 0, 0.999) * count
    lo = np.maximum(start, centre.astype(np.int64) - half)
    hi = np.minimum(start + count, centre.astype(np.int64) + half + 1)
    epoch = np.clip((ts - SNAPSHOT0_MS) // WEEK_MS + 1, 0, N_EPOCHS - 1)
    u = rng.random(n)
    picked = np.empty(n, dtype=np.int64)
    for e in np.unique(epoch):
        m = epoch == e
        cum = cat.cum_weight[e]
        a, b = cum[lo[m]], cum[hi[m]]
        pos = np.searchsorted(cum, a + u[m] * (b - a), side="right") - 1
        picked[m] = np.clip(pos, lo[m], hi[m] - 1)
    # a few views land anywhere in the category: the long tail of items seen once
    anywhere = rng.random(n) < P_ANYWHERE
    picked[anywhere] = start[anywhere] + (rng.random(int(anywhere.sum())) * count[anywhere]).astype(
        np.int64
    )
    return picked


def _pick(rng: np.random.Generator, weight: np.ndarray, share: float) -> np.ndarray:
    """Mask of ``round(share * len(weight))`` elements drawn without replacement by weight.

    Exact counts (instead of one coin per visitor) keep the funnel shares on target even
    at small scales.  Efraimidis-Spirakis: the smallest ``Exp(1) / weight`` keys win.
    """
    k = min(round(share * len(weight)), int((weight > 0).sum()))
    mask = np.zeros(len(weight), dtype=bool)
    if k:
        with np.errstate(divide="ignore"):
            key = rng.exponential(size=len(weight)) / weight
        mask[np.argpartition(key, k - 1)[:k]] = True
    return mask


def _visitors(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per visitor: views, sessions, add-to-carts and purchases."""
    cart_only = _pick(rng, np.ones(n), CART_ONLY_SHARE)
    tail = np.floor(VIEWS_C * (rng.random(n) ** (-1 / VIEWS_ALPHA) - 1)).astype(np.int64)
    views = np.where(rng.random(n) < P_SINGLE_VIEW, 1, 2 + np.minimum(tail, MAX_VIEWS))
    views[cart_only] = 0
    # multi-session visitors: more likely the more they view
    multi = _pick(rng, np.log(np.maximum(views, 1)) ** 0.7, MULTI_SESSION_SHARE)
    extra = rng.poisson(EXTRA_SESSIONS * np.log(np.maximum(views, 1)))
    sessions = np.where(multi, np.minimum(views, 2 + extra), 1)
    score = views**CART_VIEWS_EXPONENT * np.where(multi, CART_MULTI_SESSION, 1)
    carter = cart_only | _pick(rng, score, CART_SHARE - CART_ONLY_SHARE)
    buy_score = np.where(multi, BUY_MULTI_SESSION, 1.0) * carter
    buyer = _pick(rng, buy_score, BUY_GIVEN_CART * carter.mean())
    buys = np.where(buyer, 1 + rng.poisson(0.92, n), 0)
    carts = np.where(
        buyer, buys + rng.poisson(0.9, n), np.where(carter, 1 + rng.poisson(0.4, n), 0)
    )
    return {"views": views, "sessions": sessions, "carts": carts, "buys": buys}


def _events(
    rng: np.random.Generator, n: int, cat: _Catalogue, parents: np.ndarray
) -> dict[str, np.ndarray]:
    """Event columns (unsorted; ``tx`` = -1 on non-transaction rows)."""
    v = _visitors(rng, n)
    views, sessions = v["views"], v["sessions"]
    prefs, pref_cum = _preferences(rng, n, cat, parents)
    taste = rng.random(n)

    # --- views: position in the visitor's sequence, session cuts, time offsets
    n_views = int(views.sum())
    who = np.repeat(np.arange(n), views)
    first = np.cumsum(views) - views
    j = np.arange(n_views) - first[who]
    key = np.where(j == 0, 2.0, rng.random(n_views))
    cut = (j > 0) & (_segment_rank(who, key) < sessions[who] - 1)
    intra = np.clip(rng.lognormal(np.log(45_000), 1.1, n_views), 1_000, 20 * 60_000)
    days = rng.geometric(GAP_DAYS_P, n_views)
    inter = np.where(
        rng.random(n_views) < SHORT_GAP_SHARE,
        SESSION_GAP_MIN_MS + rng.lognormal(np.log(2 * HOUR_MS), 1.0, n_views),
        days * DAY_MS + rng.normal(0, 2 * HOUR_MS, n_views),
    )
    gap = np.where(cut, np.clip(inter, SESSION_GAP_MIN_MS, 60 * DAY_MS), intra)
    gap[j == 0] = 0
    cum = np.cumsum(gap)
    offset = cum - cum[first[who]]
    last = np.where(views > 0, first + views - 1, 0)
    duration = np.where(views > 0, offset[last], 0)
    room = END_MS - START_MS - 2 * END_MARGIN_MS
    shrink = np.minimum(1.0, room / np.maximum(duration, 1))
    offset = offset * shrink[who]
    duration = duration * shrink
    # the visitor's time line covers a time drawn with the real daily/weekly rhythm; time
    # lines that would leave the span are placed uniformly inside it instead
    duration = duration.astype(np.int64)
    begin = _sample_times(rng, n) - (rng.random(n) * duration).astype(np.int64)
    latest = END_MS - END_MARGIN_MS - duration
    outside = (begin < START_MS) | (begin > latest)
    room_left = (latest - START_MS)[outside]
    begin[outside] = START_MS + (rng.random(len(room_left)) * room_left).astype(np.int64)
    view_ts = begin[who] + offset.astype(np.int64)

    # --- view items: fresh picks, or repeats of an earlier view of the same visitor
    fresh = (j == 0) | (rng.random(n_views) >= P_REVIEW)
    src = np.arange(n_views)
    rep = ~fresh
    src[rep] = first[who[rep]] + (rng.random(int(rep.sum())) * j[rep]).astype(np.int64)
    while True:  # pointer jumping: each repeat points (eventually) to a fresh view
        nxt = src[src]
        if np.array_equal(nxt, src):
            break
        src = nxt
    view_pos = np.empty(n_views, dtype=np.int64)
    view_pos[fresh] = _pick_items(rng, cat, who[fresh], view_ts[fresh], prefs, pref_cum, taste)
    view_pos = view_pos[src]

    # --- add-to-carts: mostly an item the visitor viewed (later views more likely)
    carts = v["carts"]
    n_carts = int(carts.sum())
    cwho = np.repeat(np.arange(n), carts)
    cfirst = np.cumsum(carts) - carts
    has_views = views[cwho] > 0
    k = (views[cwho] * np.sqrt(rng.random(n_carts))).astype(np.int64)
    chosen = first[cwho] + np.minimum(k, np.maximum(views[cwho] - 1, 0))
    chosen = np.where(has_views, chosen, 0)
    cj = np.arange(n_carts) - cfirst[cwho]
    cart_ts = np.where(
        has_views,
        view_ts[chosen] + rng.integers(3_000, 90_000, n_carts),
        begin[cwho] + cj * 60_000 + rng.integers(0, 50_000, n_carts),
    )
    cart_pos = _pick_items(rng, cat, cwho, cart_ts, prefs, pref_cum, taste)
    from_view = has_views & (rng.random(n_carts) < P_CART_VIEWED)
    cart_pos[from_view] = view_pos[chosen[from_view]]

    # --- purchases: distinct carts of buyers, after their last add-to-cart
    buys = v["buys"]
    bought = _segment_rank(cwho, rng.random(n_carts)) < buys[cwho]
    pwho, pos = cwho[bought], cart_pos[bought]
    prank = _segment_rank(pwho, rng.random(len(pwho)))
    last_cart = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last_cart, cwho, cart_ts)
    new_tx = (prank == 0) | (rng.random(len(pwho)) < 0.3)
    order = np.lexsort((prank, pwho))
    group = np.empty(len(pwho), dtype=np.int64)
    group[order] = np.cumsum(new_tx[order]) - 1
    tx_id = rng.permutation(int(new_tx.sum()))[group]
    within = group - group[order][np.searchsorted(pwho[order], pwho)]
    delay = rng.integers(20_000, 120_000, n)
    buy_ts = last_cart[pwho] + delay[pwho] + within * 20_000 + rng.integers(0, 3_000, len(pwho))

    visitor_ids = rng.permutation(n).astype(np.int64)
    return {
        "ts": np.concatenate([view_ts, cart_ts, buy_ts]),
        "visitor": visitor_ids[np.concatenate([who, cwho, pwho])],
        "type": np.repeat([0, 1, 2], [n_views, n_carts, len(pwho)]),
        "item": cat.item_ids[np.concatenate([view_pos, cart_pos, pos])],
        "tx": np.concatenate([np.full(n_views + n_carts, -1), tx_id]),
    }


# --------------------------------------------------------------------------- properties


def _numbers(rng: np.random.Generator, n: int) -> pa.Array:
    """Hashed numbers as in the real files: ``n277.200``."""
    milli = (np.round(rng.lognormal(4.5, 1.8, n) / 0.12) * 120).astype(np.int64)
    whole = pc.cast(pa.array(milli // 1000), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(milli % 1000), pa.string()), 3, "0")
    return pc.binary_join_element_wise(pa.scalar("n"), whole, pa.scalar("."), frac, "")


def _tokens(rng: np.random.Generator, n: int, most: int, number: bool) -> pa.Array:
    """1-``most`` space-separated hashed tokens (``1116713 960601``), optionally a number."""
    words = rng.integers(1, 1_400_000, 100_000)
    count = rng.integers(1, most + 1, n)
    parts = []
    for i in range(most):
        tok = pa.array(words[np.minimum(rng.zipf(1.3, n), len(words)) - 1])
        parts.append(pc.if_else(pa.array(i < count), pc.cast(tok, pa.string()), None))
    if number:  # mixed values: tokens with one number in second place
        parts.insert(1, _numbers(rng, n))
    return pc.binary_join_element_wise(*parts, " ", null_handling="skip")


@dataclass
class _PropertyLog:
    """Rows of the change log as integer codes.

    ``prop`` 0 is ``categoryid``, 1 is ``available``, the others hashed names.  ``value``
    codes below the number of categories are category positions, the next two "0"/"1",
    the rest index the hashed vocabulary (``vocab`` entries per hashed property).
    """

    snapshot: np.ndarray
    item: np.ndarray
    prop: np.ndarray
    value: np.ndarray
    vocab: np.ndarray


def _property_log(rng: np.random.Generator, cat: _Catalogue, parents: np.ndarray) -> _PropertyLog:
    """Initial rows when an item enters the log, then one row per change at each snapshot."""
    n_items, n_cat = len(cat.item_ids), len(parents)
    n_hashed = N_PROPERTY_NAMES - 2
    n_dyn = len(DYNAMIC_CHANGE)
    n_universal = N_STATIC_UNIVERSAL + n_dyn
    rank = np.arange(1, n_hashed - n_universal + 1)
    vocab = np.concatenate(
        [np.full(n_universal, max(50, n_items // 10)), np.maximum(3, 2000 / np.sqrt(rank))]
    ).astype(np.int64)
    vocab_start = n_cat + 2 + np.concatenate([[0], np.cumsum(vocab)[:-1]])
    k0 = cat.first_snapshot
    remaining = max(1.0, (N_SNAPSHOTS - 1 - k0).mean())
    p_cat = (CATEGORY_ROWS - 1) / remaining
    hashed_rows = PROPERTY_ROWS - CATEGORY_ROWS - AVAILABLE_ROWS - n_universal
    n_optional = max(0.0, hashed_rows - sum(DYNAMIC_CHANGE) * remaining)
    optional_p = 1.0 / rank
    optional_p /= optional_p.sum()
    # names are drawn with replacement and de-duplicated: find the Poisson mean whose
    # expected number of distinct names is n_optional
    lo, hi = 0.0, 10 * n_optional + 1
    for _ in range(60):
        lam = (lo + hi) / 2
        lo, hi = (lam, hi) if (1 - np.exp(-lam * optional_p)).sum() < n_optional else (lo, lam)
    by_parent, group_start, group_end = _siblings(parents)

    def code(prop: np.ndarray) -> np.ndarray:
        h = prop - 2
        return vocab_start[h] + (vocab[h] * rng.random(len(h)) ** 2).astype(np.int64)

    blocks = []
    for k in range(N_SNAPSHOTS):
        new = np.flatnonzero(k0 == k)
        old = np.flatnonzero(k0 < k)
        # items entering the log: category, availability, universal and optional properties
        n_opt = rng.poisson(lam, len(new))
        opt_item = np.repeat(new, n_opt)
        opt_prop = 2 + n_universal + rng.choice(len(rank), len(opt_item), p=optional_p)
        key = np.unique(opt_item * N_PROPERTY_NAMES + opt_prop)
        universal = np.tile(np.arange(2, 2 + n_universal), len(new))
        rows = [
            (new, np.zeros(len(new)), cat.category[new]),
            (new, np.ones(len(new)), n_cat + cat.available[new, k]),
            (np.repeat(new, n_universal), universal, code(universal)),
            (key // N_PROPERTY_NAMES, key % N_PROPERTY_NAMES, code(key % N_PROPERTY_NAMES)),
        ]
        # items already in the log: changed dynamic properties ...
        for d, p in enumerate(DYNAMIC_CHANGE):
            changed = old[rng.random(len(old)) < p]
            prop = np.full(len(changed), 2 + N_STATIC_UNIVERSAL + d)
            rows.append((changed, prop, code(prop)))
        # ... category re-logged (a quarter of the time as a sibling category) ...
        relog = old[rng.random(len(old)) < p_cat]
        c = cat.category[relog]
        span = group_end[c] - group_start[c]
        sibling = by_parent[group_start[c] + (rng.random(len(c)) * span).astype(np.int64)]
        rows.append((relog, np.zeros(len(relog)), np.where(rng.random(len(c)) < 0.25, sibling, c)))
        # ... and availability when it flipped
        if k:
            flip = old[cat.available[old, k] != cat.available[old, k - 1]]
            rows.append((flip, np.ones(len(flip)), n_cat + cat.available[flip, k]))
        it, pr, va = (np.concatenate([r[i] for r in rows]).astype(np.int64) for i in range(3))
        blocks.append((np.full(len(it), k, np.int8), it, pr, va))
    snapshot, item, prop, value = (np.concatenate([b[i] for b in blocks]) for i in range(4))
    return _PropertyLog(snapshot, cat.item_ids[item], prop.astype(np.int32), value, vocab)


# --------------------------------------------------------------------------- writing


def _write_csv(path: Path, header: tuple[str, ...], tables: list[pa.Table], mode: str) -> None:
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, mode + "b") as fh:
        if mode == "w":
            fh.write((",".join(header) + "\n").encode())
        for table in tables:
            pacsv.write_csv(table, fh, options)


def _write_tree(
    path: Path, cat_ids: np.ndarray, parents: np.ndarray, rng: np.random.Generator
) -> None:
    order = rng.permutation(len(cat_ids))
    parent = pa.array(np.where(parents >= 0, cat_ids[parents], 0), mask=parents < 0)
    table = pa.table({C.CATEGORY: pa.array(cat_ids), C.PARENT: parent}).take(pa.array(order))
    _write_csv(path, C.CATEGORY_TREE_COLUMNS, [table], "w")


def _write_events(
    path: Path, ev: dict[str, np.ndarray], scale: float, rng: np.random.Generator
) -> None:
    n = len(ev["ts"])
    dup = rng.choice(n, max(3, round(DUPLICATE_EVENTS * scale)), replace=False)
    rows = np.concatenate([np.arange(n), dup])
    # roughly, but not strictly, time-ordered, as the Kaggle file
    order = rows[np.argsort(ev["ts"][rows] + rng.normal(0, 2 * HOUR_MS, len(rows)))]
    tx = ev["tx"][order]
    table = pa.table(
        {
            C.TIMESTAMP: pa.array(ev["ts"][order]),
            C.VISITOR: pa.array(ev["visitor"][order]),
            C.EVENT: pa.array(C.EVENT_TYPES).take(pa.array(ev["type"][order])),
            C.ITEM: pa.array(ev["item"][order]),
            C.TRANSACTION: pa.array(tx, mask=tx < 0),
        }
    )
    _write_csv(path, C.EVENTS_COLUMNS, [table], "w")


def _value_strings(
    rng: np.random.Generator, cat_ids: np.ndarray, vocab: np.ndarray
) -> tuple[pa.Array, np.ndarray]:
    """All value strings (category ids, "0"/"1", hashed vocabulary) and a code -> row map."""
    n_hashed = len(vocab)
    # universal dynamic properties are a price-like number, a text and a mixed value; the
    # others are numbers, single tokens, texts or mixed values
    kinds = rng.choice(4, n_hashed, p=[0.3, 0.3, 0.25, 0.15])
    kinds[N_STATIC_UNIVERSAL : N_STATIC_UNIVERSAL + len(DYNAMIC_CHANGE)] = [0, 2, 3]
    slot_kind = np.repeat(kinds, vocab)
    parts = [pa.array(cat_ids.astype(str)), pa.array(["0", "1"])]
    where = np.empty(len(slot_kind), dtype=np.int64)
    done = len(cat_ids) + 2
    for kind in range(4):
        slots = np.flatnonzero(slot_kind == kind)
        if kind == 0:
            parts.append(_numbers(rng, len(slots)))
        else:
            parts.append(_tokens(rng, len(slots), 1 if kind == 1 else 5, number=kind == 3))
        where[slots] = done + np.arange(len(slots))
        done += len(slots)
    strings = pa.concat_arrays([p.cast(pa.string()) for p in parts])
    return strings, np.concatenate([np.arange(len(cat_ids) + 2), where])


def _write_properties(
    rng: np.random.Generator,
    paths: list[Path],
    split: int,
    log: _PropertyLog,
    cat_ids: np.ndarray,
    progress: bool,
) -> None:
    names = rng.choice(1_200, N_PROPERTY_NAMES - 2, replace=False).astype(str)
    name_strings = pa.array([C.CATEGORY, C.AVAILABLE, *names])
    value_strings, remap = _value_strings(rng, cat_ids, log.vocab)
    order = rng.permutation(len(log.snapshot))  # the Kaggle files are not sorted
    for path in paths:
        _write_csv(path, C.PROPERTIES_COLUMNS, [], "w")
    chunks = range(0, len(order), WRITE_CHUNK)
    for lo in tqdm(chunks, desc="item properties", unit="chunk", disable=not progress):
        rows = order[lo : lo + WRITE_CHUNK]
        table = pa.table(
            {
                C.TIMESTAMP: pa.array(SNAPSHOTS_MS[log.snapshot[rows]]),
                C.ITEM: pa.array(log.item[rows]),
                C.PROPERTY: name_strings.take(pa.array(log.prop[rows])),
                C.VALUE: value_strings.take(pa.array(remap[log.value[rows]])),
            }
        )
        head = max(0, min(len(rows), split - lo))
        if head:
            _write_csv(paths[0], C.PROPERTIES_COLUMNS, [table.slice(0, head)], "a")
        if head < len(rows):
            _write_csv(paths[1], C.PROPERTIES_COLUMNS, [table.slice(head)], "a")
