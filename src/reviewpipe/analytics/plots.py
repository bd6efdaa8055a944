"""The EDA figures (the course's views), drawn from explore's SQL results, as PNG bytes."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # files only, never a window (CI, servers)

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reviewpipe.figures import figure_png  # noqa: E402

MISSING_LABEL = "(missing)"
SENTIMENT_NAMES = {-1: "negative (-1)", 0: "neutral (0)", 1: "positive (1)"}
SENTIMENT_COLORS = {-1: "#d95f02", 0: "#7570b3", 1: "#1b9e77"}


def _labels(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna(MISSING_LABEL)


def sentiment_counts(frame: pd.DataFrame) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4))
    sentiments = frame["sentiment"].astype(int)
    ax.bar(
        [SENTIMENT_NAMES.get(s, str(s)) for s in sentiments],
        frame["reviews"],
        color=[SENTIMENT_COLORS.get(s, "grey") for s in sentiments],
    )
    ax.set(title="Reviews per sentiment", xlabel="sentiment", ylabel="reviews")
    return figure_png(fig)


def category_counts(frame: pd.DataFrame) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(frame) + 1.5))
    sns.barplot(x=frame["reviews"], y=_labels(frame["product_category"]), color="#4c72b0", ax=ax)
    ax.set(title="Reviews per product category", xlabel="reviews", ylabel="product category")
    return figure_png(fig)


def category_avg_sentiment(frame: pd.DataFrame) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(frame) + 1.5))
    sns.barplot(x=frame["avg_sentiment"], y=_labels(frame["product_category"]), color="#55a868", ax=ax)
    ax.set(
        title="Average sentiment per product category",
        xlabel="average sentiment (-1..1)",
        ylabel="product category",
    )
    return figure_png(fig)


def category_sentiment_share(frame: pd.DataFrame) -> bytes:
    shares = frame.assign(product_category=_labels(frame["product_category"])).pivot_table(
        index="product_category", columns="sentiment", values="share", fill_value=0.0
    )
    shares = shares.sort_values(by=shares.columns[-1])  # most positive at the top
    fig, ax = plt.subplots(figsize=(8.5, 0.3 * len(shares) + 1.5))
    left = pd.Series(0.0, index=shares.index)
    for sentiment in shares.columns:
        ax.barh(
            shares.index,
            shares[sentiment],
            left=left,
            label=SENTIMENT_NAMES.get(int(sentiment)),
            color=SENTIMENT_COLORS.get(int(sentiment), "grey"),
        )
        left += shares[sentiment]
    ax.set(title="Sentiment share per product category", xlabel="share of reviews", xlim=(0, 1))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", title="sentiment")
    return figure_png(fig)


def word_count_histogram(frame: pd.DataFrame) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4))
    width = float(frame["bin_start"].diff().min()) if len(frame) > 1 else 10.0
    ax.bar(
        frame["bin_start"], frame["reviews"], width=width, align="edge", color="#8172b2", edgecolor="white"
    )
    ax.set(title="Words per review", xlabel="words in review_body", ylabel="reviews")
    return figure_png(fig)


def sentiment_by_age_band(frame: pd.DataFrame) -> bytes:
    data = frame.assign(
        age_band=_labels(frame["age_band"]),
        sentiment=frame["sentiment"].map(lambda s: SENTIMENT_NAMES.get(int(s), str(s))),
    )
    fig, ax = plt.subplots(figsize=(8.5, 4))
    sns.barplot(
        data=data,
        x="age_band",
        y="share",
        hue="sentiment",
        ax=ax,
        palette={SENTIMENT_NAMES[k]: c for k, c in SENTIMENT_COLORS.items()},
    )
    ax.set(title="Sentiment share per age band", xlabel="age band", ylabel="share of the band's reviews")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return figure_png(fig)


# plot name -> (title, SQL result it draws, function)
PLOTS: dict[str, tuple[str, str, Callable[[pd.DataFrame], bytes]]] = {
    "sentiment_counts": ("Reviews per sentiment", "sentiment_counts", sentiment_counts),
    "category_avg_sentiment": (
        "Average sentiment per category",
        "category_avg_sentiment",
        category_avg_sentiment,
    ),
    "category_counts": ("Reviews per category", "category_counts", category_counts),
    "category_sentiment_share": (
        "Sentiment share per category",
        "category_sentiment_counts",
        category_sentiment_share,
    ),
    "word_count_histogram": ("Words per review", "word_count_histogram", word_count_histogram),
    "sentiment_by_age_band": ("Sentiment share per age band", "sentiment_by_age_band", sentiment_by_age_band),
}


def make_plots(results: dict[str, pd.DataFrame]) -> tuple[dict[str, tuple[str, bytes]], list[str]]:
    """({plot name: (title, PNG)}, [notes on plots skipped because their SQL result is missing])."""
    plots, skipped = {}, []
    sns.set_theme(style="whitegrid")
    for name, (title, source, draw) in PLOTS.items():
        if source not in results or results[source].empty:
            skipped.append(f"{title}: no rows from sql/{source}.sql")
            continue
        plots[name] = (title, draw(results[source]))
    return plots, skipped
