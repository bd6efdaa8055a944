"""Synthetic Kaggle-schema clothing reviews: plausible, skewed like the real data, with planted bad rows.

`synth_reviews(rows, seed, bad_rows)` returns the CSV bytes and how many rows ingest must reject per
reason, so tests know exactly what to expect. `reviewpipe synth` writes the same bytes to any URI.
Deterministic for a seed. Vocabulary differs by sentiment so models have something to learn.
"""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Mapping

import numpy as np
import pandas as pd

from reviewpipe.data.schema import RAW_COLUMNS
from reviewpipe.storage import StorageOptions, get_fs, is_remote

# Bad-row kinds, named by the reject reason ingest gives them. Each bad row has exactly one defect.
BAD_ROW_KINDS: tuple[str, ...] = (
    "missing_review_body",
    "rating_out_of_range",
    "invalid_rating",
    "age_out_of_range",
    "duplicate_review_id",
    "undecodable_bytes",
)

# Ratings 1..5 share of the real data (~3.6%, 6.7%, 12.2%, 21.6%, 55.9%).
RATING_SHARES = np.array([0.036, 0.067, 0.122, 0.216, 0.559])
RECOMMEND_PROBABILITY = np.array([0.02, 0.07, 0.42, 0.95, 0.99])  # P(Recommended IND = 1 | rating)

# Class Name -> (Department Name, relative frequency, noun phrase "this ...", bare noun).
# Frequencies follow the real data; the two rare classes are boosted a little so they show up.
CATEGORIES: dict[str, tuple[str, float, str, str]] = {
    "Dresses": ("Dresses", 6319, "this dress", "dress"),
    "Knits": ("Tops", 4843, "this top", "top"),
    "Blouses": ("Tops", 3097, "this blouse", "blouse"),
    "Sweaters": ("Tops", 1428, "this sweater", "sweater"),
    "Pants": ("Bottoms", 1388, "these pants", "pants"),
    "Jeans": ("Bottoms", 1147, "these jeans", "jeans"),
    "Fine gauge": ("Tops", 1100, "this fine knit", "knit"),
    "Skirts": ("Bottoms", 945, "this skirt", "skirt"),
    "Jackets": ("Jackets", 704, "this jacket", "jacket"),
    "Lounge": ("Intimate", 691, "this lounge set", "lounge set"),
    "Swim": ("Intimate", 350, "this swimsuit", "swimsuit"),
    "Outerwear": ("Jackets", 328, "this coat", "coat"),
    "Shorts": ("Bottoms", 317, "these shorts", "shorts"),
    "Sleep": ("Intimate", 228, "this pajama set", "pajama set"),
    "Legwear": ("Intimate", 165, "these leggings", "leggings"),
    "Intimates": ("Intimate", 154, "this bralette", "bralette"),
    "Layering": ("Intimate", 146, "this cami", "cami"),
    "Trend": ("Trend", 119, "this piece", "piece"),
    "Casual bottoms": ("Bottoms", 40, "these joggers", "joggers"),
    "Chemises": ("Intimate", 30, "this chemise", "chemise"),
}
NULL_CATEGORY_SHARE = 0.001  # the real data has 14 rows without division/department/class
TITLE_NULL_SHARE = 0.16
NEWLINE_SHARE = 0.08  # texts with an embedded (quoted) newline, as in the real file

NEGATIVE = (
    "Unfortunately {this} is going back.",
    "The material feels cheap and thin.",
    "It runs very small and the seams were already coming apart.",
    "Completely unflattering, it looked like a sack on me.",
    "Way too see-through, I would have to wear a slip underneath.",
    "The color was nothing like the picture, very disappointed.",
    "Poor quality for the price, it pilled after one wash.",
    "Itchy fabric and an awkward, boxy cut.",
    "Huge in the chest and tight in the hips.",
    "Sadly I returned {this} the next day.",
    "The zipper broke the first time I wore {this}.",
    "Save your money, this {item} is a waste.",
)
NEUTRAL = (
    "{this} is okay but not great.",
    "Decent fabric, though the fit is a bit off.",
    "I like the color but the sizing is inconsistent.",
    "It's fine for the price, nothing special.",
    "Not sure I will keep it, the length is a little awkward.",
    "Mixed feelings about this {item}.",
    "Cute design but the material wrinkles easily.",
    "Average quality, I might exchange it for a smaller size.",
    "The {item} is pretty enough, just not what I expected.",
    "Somewhat shapeless on me, but comfortable.",
    "It's alright, I wish the fabric were thicker.",
)
POSITIVE = (
    "I love {this}!",
    "The fabric is so soft and the fit is perfect.",
    "Fits true to size and looks gorgeous on.",
    "Got so many compliments the first time I wore {this}.",
    "Great quality for the price, I bought it in two colors.",
    "Very flattering {item}, comfortable enough to wear all day.",
    "Beautiful color, exactly as pictured.",
    "{this} drapes nicely and washes well.",
    "Highly recommend, this is my new favorite {item}.",
    "Lovely details and the length is just right.",
    "Stunning {item}, worth every penny.",
)
# Sentiment-free detail, with the inch-mark quotes the real reviews are full of.
FILLER = (
    "I'm 5'4\" and usually wear a small.",
    "I'm 5'7\", 135 lbs, and ordered my usual size.",
    "For reference, I'm petite and wear a 2.",
    "I ordered the medium; I'm 5'5\" with a long torso.",
    "Bought it for a wedding, wore it with flats.",
)
TITLES = (
    (
        "Disappointed",
        "Returned",
        "Cheap fabric",
        "Runs small",
        "Not for me",
        "Poor quality",
        "So unflattering",
    ),
    ("Just okay", "Almost", "Cute but...", "Mixed feelings", "Not sure", "Average {item}"),
    (
        "Love it",
        "Perfect {item}",
        "Gorgeous!",
        "So comfortable",
        "Great fit",
        "Beautiful {item}",
        "My new favorite",
    ),
)
# Per rating 1..5: probability that a sentence comes from the negative / neutral / positive pool.
POOL_MIX = np.array(
    [
        [1.00, 0.00, 0.00],
        [0.75, 0.25, 0.00],
        [0.20, 0.60, 0.20],
        [0.00, 0.20, 0.80],
        [0.00, 0.00, 1.00],
    ]
)
FILLER_SHARE = 0.12

# Bad values that fail exactly one rule with the default data params (age 13..110).
BAD_RATINGS_OUT_OF_RANGE = ("0", "6", "7", "10", "-1")
BAD_RATINGS_NOT_NUMERIC = ("five", "4 stars", "n/a", "★★★", "good")
BAD_AGES = ("0", "5", "120", "150", "999", "-3")
# Bytes that are not UTF-8 (cp1252 smart quotes, latin-1 accents, junk): placed by token after encoding.
UNDECODABLE = (
    b"\x93Perfect\x94 is an understatement.",
    b"The caf\xe9 color is lovely.",
    b"\xff\xfe broken export bytes.",
    b"Na\xefve little details.",
)
_TOKEN = "\x1aUNDECODABLE{}\x1a"


def synth_frame(rows: int, seed: int) -> pd.DataFrame:
    """`rows` good reviews with the Kaggle header (first column "" = review id 0..rows-1)."""
    if rows < 1:
        raise ValueError("rows must be >= 1")
    rng = np.random.default_rng(seed)
    names = list(CATEGORIES)
    weights = np.array([CATEGORIES[n][1] for n in names], dtype=float)
    category_idx = rng.choice(len(names), size=rows, p=weights / weights.sum())
    null_category = rng.random(rows) < NULL_CATEGORY_SHARE
    if rows >= 200:  # always a couple, so null partitions are exercised
        null_category[rng.choice(rows, size=2, replace=False)] = True

    rating = rng.choice(5, size=rows, p=RATING_SHARES / RATING_SHARES.sum()) + 1
    sentiment_pool = np.select([rating <= 2, rating == 3], [0, 1], 2)
    recommended = (rng.random(rows) < RECOMMEND_PROBABILITY[rating - 1]).astype(int)
    age = np.clip(np.rint(rng.normal(43, 12.3, rows)), 18, 99).astype(int)
    feedback = np.minimum(rng.geometric(0.42, rows) - 1, 122)
    clothing_id = _clothing_ids(rng, category_idx, len(names))

    bodies = _bodies(rng, rating, category_idx, null_category, names)
    titles = _titles(rng, sentiment_pool, category_idx, null_category, names)

    department = np.array([CATEGORIES[n][0] for n in names], dtype=object)[category_idx]
    division = np.where(rng.random(rows) < 0.37, "General Petite", "General").astype(object)
    intimate = department == "Intimate"
    division[intimate & (rng.random(rows) < 0.86)] = "Initmates"  # sic, as spelled in the source
    category = np.array(names, dtype=object)[category_idx]
    for column in (category, department, division):
        column[null_category] = None

    frame = pd.DataFrame(
        {
            "": np.arange(rows),
            "Clothing ID": clothing_id,
            "Age": age,
            "Title": titles,
            "Review Text": bodies,
            "Rating": rating,
            "Recommended IND": recommended,
            "Positive Feedback Count": feedback,
            "Division Name": division,
            "Department Name": department,
            "Class Name": category,
        }
    )
    assert tuple(frame.columns) == RAW_COLUMNS
    return frame


def _clothing_ids(rng: np.random.Generator, category_idx: np.ndarray, n_categories: int) -> np.ndarray:
    # 1,206 item ids split into one block per class; a few popular items per class, like the real data.
    edges = np.linspace(0, 1206, n_categories + 1).astype(int)
    block = edges[1:] - edges[:-1]
    offset = np.minimum(rng.zipf(1.6, len(category_idx)) - 1, block[category_idx] - 1)
    return edges[category_idx] + offset


def _phrases(names: list[str]) -> list[tuple[str, str]]:
    return [(CATEGORIES[n][2], CATEGORIES[n][3]) for n in names] + [("this piece", "piece")]


def _format(template: str, this: str, item: str) -> str:
    text = template.format(this=this, item=item)
    return text[0].upper() + text[1:]


def _bodies(
    rng: np.random.Generator,
    rating: np.ndarray,
    category_idx: np.ndarray,
    null_category: np.ndarray,
    names: list[str],
) -> list[str]:
    pools = (NEGATIVE, NEUTRAL, POSITIVE, FILLER)
    sentences = [s for pool in pools for s in pool]
    offsets = np.cumsum([0, *(len(p) for p in pools)])
    phrases = _phrases(names)
    # Every sentence formatted for every class once; rows then only pick indices.
    formatted = [_format(s, this, item) for this, item in phrases for s in sentences]

    rows = len(rating)
    slots = 4
    mix = POOL_MIX[rating - 1]  # (rows, 3)
    u = rng.random((rows, slots))
    pool = (u[..., None] > np.cumsum(mix, axis=1)[:, None, :]).sum(axis=2)  # 0/1/2
    pool = np.where(rng.random((rows, slots)) < FILLER_SHARE, 3, pool)
    pool_len = np.diff(offsets)[pool]
    sentence = offsets[pool] + (rng.random((rows, slots)) * pool_len).astype(int)
    phrase_idx = np.where(null_category, len(names), category_idx)
    flat = phrase_idx[:, None] * len(sentences) + sentence
    n_sentences = rng.choice([1, 2, 3, 4], size=rows, p=[0.15, 0.35, 0.35, 0.15])
    # Make sure a review carries its own sentiment: the first sentence always comes from its pool.
    own_pool = np.select([rating <= 2, rating == 3], [0, 1], 2)
    first = offsets[own_pool] + (rng.random(rows) * np.diff(offsets)[own_pool]).astype(int)
    flat[:, 0] = phrase_idx * len(sentences) + first
    newline = np.where(
        rng.random(rows) < NEWLINE_SHARE, rng.choice(["\n", "\r\n", "\n\n"], size=rows), " "
    ).astype(object)

    # Vectorised over rows (5M rows for the benchmark): each later slot is "<separator><sentence>",
    # or "" when past the row's sentence count or a repeat of an earlier slot.
    text = np.array(formatted, dtype=object)
    bodies = text[flat[:, 0]]
    for slot in range(1, slots):
        repeat = (flat[:, :slot] == flat[:, slot : slot + 1]).any(axis=1)
        keep = (n_sentences > slot) & ~repeat
        separator = newline if slot == 1 else np.full(rows, " ", dtype=object)
        part = np.where(keep, separator + text[flat[:, slot]], "")
        bodies = bodies + part
    return bodies.tolist()


def _titles(
    rng: np.random.Generator,
    sentiment_pool: np.ndarray,
    category_idx: np.ndarray,
    null_category: np.ndarray,
    names: list[str],
) -> list[str | None]:
    phrases = _phrases(names)
    width = max(len(t) for t in TITLES)
    # Every title formatted for every class: index (class, sentiment pool, option).
    formatted = np.array(
        [
            _format(pool[i % len(pool)], this, item)
            for this, item in phrases
            for pool in TITLES
            for i in range(width)
        ],
        dtype=object,
    )
    rows = len(sentiment_pool)
    n_options = np.array([len(t) for t in TITLES])[sentiment_pool]
    option = (rng.random(rows) * n_options).astype(int)
    phrase_idx = np.where(null_category, len(names), category_idx)
    titles = formatted[(phrase_idx * len(TITLES) + sentiment_pool) * width + option]
    titles[rng.random(rows) < TITLE_NULL_SHARE] = None
    return titles.tolist()


def _bad_counts(bad_rows: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(bad_rows, Mapping):
        unknown = set(bad_rows) - set(BAD_ROW_KINDS)
        if unknown:
            raise ValueError(f"unknown bad-row kinds {sorted(unknown)}; known: {list(BAD_ROW_KINDS)}")
        counts = {kind: int(bad_rows.get(kind, 0)) for kind in BAD_ROW_KINDS}
    else:
        counts = dict.fromkeys(BAD_ROW_KINDS, int(bad_rows))
    if any(v < 0 for v in counts.values()):
        raise ValueError("bad-row counts must be >= 0")
    return counts


def synth_reviews(
    rows: int, seed: int, bad_rows: int | Mapping[str, int] = 0
) -> tuple[bytes, dict[str, int]]:
    """CSV bytes (UTF-8 apart from the planted undecodable rows) of `rows` reviews, and the expected
    reject count per reason. `bad_rows` is a count per kind (int) or {kind: count}; bad rows are part
    of `rows` (ingest sees rows_in == rows), each with exactly one defect."""
    counts = _bad_counts(bad_rows)
    n_bad = sum(counts.values())
    if n_bad > rows - 1:
        raise ValueError(f"{n_bad} bad rows do not fit in {rows} rows; use more rows or fewer bad rows")
    frame = synth_frame(rows, seed).astype(object)
    rng = np.random.default_rng([seed, 1])
    # Row 0 stays good, so every duplicate can point back to an earlier good row.
    positions = rng.permutation(np.arange(1, rows))[:n_bad]
    kinds = [kind for kind in BAD_ROW_KINDS for _ in range(counts[kind])]
    bad_at = dict(zip(positions.tolist(), kinds, strict=True))
    columns = {name: frame[name].tolist() for name in RAW_COLUMNS}
    body, rating, age, rid = columns["Review Text"], columns["Rating"], columns["Age"], columns[""]
    for i, (pos, kind) in enumerate(sorted(bad_at.items())):
        if kind == "missing_review_body":
            body[pos] = None if i % 2 == 0 else "   "
        elif kind == "rating_out_of_range":
            rating[pos] = BAD_RATINGS_OUT_OF_RANGE[i % len(BAD_RATINGS_OUT_OF_RANGE)]
        elif kind == "invalid_rating":
            rating[pos] = BAD_RATINGS_NOT_NUMERIC[i % len(BAD_RATINGS_NOT_NUMERIC)]
        elif kind == "age_out_of_range":
            age[pos] = BAD_AGES[i % len(BAD_AGES)]
        elif kind == "duplicate_review_id":
            # An exact re-delivery of an earlier good row (same id, same content).
            source = int(rng.integers(pos))
            while source in bad_at:  # row 0 is always good, so this ends
                source = int(rng.integers(pos))
            for name in RAW_COLUMNS:
                columns[name][pos] = columns[name][source]
            rid[pos] = rid[source]
        elif kind == "undecodable_bytes":
            body[pos] = _TOKEN.format(i % len(UNDECODABLE)) + " " + str(body[pos])
    text = pd.DataFrame(columns).to_csv(index=False, lineterminator="\n")
    data = text.encode("utf-8")
    for k, raw in enumerate(UNDECODABLE):
        data = data.replace(_TOKEN.format(k).encode("utf-8"), raw)
    return data, {kind: n for kind, n in counts.items() if n}


def write_synth(
    uri: str,
    rows: int,
    seed: int,
    bad_rows: int | Mapping[str, int] = 0,
    options: StorageOptions | None = None,
) -> dict[str, int]:
    """Write synth_reviews to any URI (gzip when it ends in .gz, byte-identical per seed)."""
    data, expected = synth_reviews(rows, seed, bad_rows)
    if uri.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    fs, path = get_fs(uri, options or StorageOptions.from_params(None))
    if not is_remote(uri):
        fs.makedirs(fs._parent(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)
    return expected


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=2000, help="rows in the file, bad rows included")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument(
        "--output", required=True, help="where to write: a path or URI (s3://...); gzip when it ends in .gz"
    )
    parser.add_argument(
        "--bad-rows", type=int, default=0, help=f"bad rows of each kind to plant: {', '.join(BAD_ROW_KINDS)}"
    )


def run(args: argparse.Namespace) -> int:
    from reviewpipe.errors import ReviewpipeError

    try:
        expected = write_synth(args.output, args.rows, args.seed, args.bad_rows)
    except ValueError as exc:
        raise ReviewpipeError(str(exc)) from exc
    planted = ", ".join(f"{kind}={n}" for kind, n in expected.items()) or "none"
    print(f"wrote {args.rows} synthetic reviews to {args.output} (bad rows: {planted})")
    return 0
