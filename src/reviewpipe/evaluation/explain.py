"""SHAP explanations: LinearExplainer for the TF-IDF baseline, Partition + Text masker for text models.

Baseline: SHAP values of the logistic regression's per-class margin (log-odds scale) over the
TF-IDF n-gram features. Global importance = mean |SHAP| per n-gram and class over the explained
rows. Per review, each present n-gram's value is spread over the words it was read from (word
n-grams over their tokens, char_wb n-grams onto their word), so the highlighted words add up to
the present features' total; n-grams absent from the review also shift the margin (their value
is reported as one number).

Text models (BERT): shap's Partition explainer with a Text masker built on the model's tokenizer
explains the class probabilities token by token.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from reviewpipe import SENTIMENTS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.metrics import CLASS_NAMES

CLASS_LABELS: list[str] = [CLASS_NAMES[s] for s in SENTIMENTS]
WORD_CHUNK = re.compile(r"\S+")


@dataclass
class ReviewExplanation:
    """One review: its text split into pieces, each with a contribution to `explained_class`."""

    text: str
    pieces: list[tuple[str, float]]  # (text piece incl. following whitespace, contribution)
    explained_class: str
    probabilities: dict[str, float]
    base_value: float
    unit: str  # "log-odds" (baseline) or "probability" (Partition)
    other: float = 0.0  # contribution not located in the text (absent n-grams)
    top_features: list[tuple[str, float]] = field(default_factory=list)
    observed: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "observed": self.observed,
            "explained_class": self.explained_class,
            "probabilities": self.probabilities,
            "base_value": self.base_value,
            "unit": self.unit,
            "other": self.other,
            "pieces": [[t, v] for t, v in self.pieces],
            "top_features": [[n, v] for n, v in self.top_features],
        }


# ---------------------------------------------------------------- baseline (LinearExplainer)


def _parts(model: Pipeline) -> tuple[Any, Any]:
    if not isinstance(model, Pipeline) or "features" not in model.named_steps:
        raise ReviewpipeError("the baseline explainer needs the baseline pipeline (features + classifier).")
    return model.named_steps["features"], model.named_steps["classifier"]


def feature_names(model: Pipeline) -> np.ndarray:
    """`word:<n-gram>` / `char:<n-gram>` for every column of the feature union."""
    union, _ = _parts(model)
    names = []
    for name, vectorizer in union.transformer_list:
        vocabulary = vectorizer.get_feature_names_out()
        names.extend(f"{name}:{v}" for v in vocabulary)
    return np.asarray(names, dtype=object)


def linear_explainer(model: Pipeline, background_texts: Sequence[str]) -> Any:
    """shap.LinearExplainer on the classifier, background = the training texts' TF-IDF matrix."""
    import shap

    union, classifier = _parts(model)
    background = union.transform(list(background_texts)).tocsr()
    return shap.LinearExplainer(
        classifier, shap.maskers.Independent(background, max_samples=background.shape[0])
    )


def linear_shap_values(explainer: Any, model: Pipeline, texts: Sequence[str], chunk_rows: int = 16) -> Any:
    """Yield (row_offset, values (rows, features, classes), TF-IDF rows) in chunks: the dense array is large."""
    union, _ = _parts(model)
    matrix = union.transform(list(texts)).tocsr()
    for start in range(0, matrix.shape[0], chunk_rows):
        rows = matrix[start : start + chunk_rows]
        values = np.asarray(explainer.shap_values(rows))
        if values.ndim == 2:  # a binary model explains one margin; give it a class axis
            values = values[:, :, None]
        yield start, values, rows


def global_importance(
    explainer: Any, model: Pipeline, texts: Sequence[str], top_k: int = 20, analyzer: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Per class: the `top_k` n-grams by mean |SHAP| over `texts`.

    Each also gets `mean_shap_present`, its mean SHAP value over the reviews that contain it (the
    sign says whether the n-gram pushes towards the class or away), and `reviews`, how many contain
    it. `analyzer` ("word" or "char") keeps only that vectorizer's n-grams; None ranks all together."""
    names = feature_names(model)
    total_abs = np.zeros((len(names), len(SENTIMENTS)))
    present_sum = np.zeros((len(names), len(SENTIMENTS)))
    present_rows = np.zeros(len(names))
    for _, values, rows in linear_shap_values(explainer, model, texts):
        total_abs += np.abs(values).sum(axis=0)
        present = rows.toarray() > 0
        present_sum += (values * present[:, :, None]).sum(axis=0)
        present_rows += present.sum(axis=0)
    n = max(len(texts), 1)
    keep = (
        np.ones(len(names), dtype=bool)
        if analyzer is None
        else np.char.startswith(names.astype(str), f"{analyzer}:")
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for c, label in enumerate(CLASS_LABELS):
        scores = np.where(keep, total_abs[:, c] / n, -np.inf)
        order = np.argsort(-scores, kind="stable")[:top_k]
        out[label] = [
            {
                "feature": str(names[i]).split(":", 1)[1],
                "kind": str(names[i]).split(":", 1)[0],
                "mean_abs_shap": float(total_abs[i, c] / n),
                "mean_shap_present": float(present_sum[i, c] / max(present_rows[i], 1)),
                "reviews": int(present_rows[i]),
            }
            for i in order
            if np.isfinite(scores[i])
        ]
    return out


def _word_pieces(text: str) -> tuple[list[tuple[int, int]], list[str]]:
    """Whitespace-separated words (span) of `text`; each highlight piece is one such word."""
    spans = [(m.start(), m.end()) for m in WORD_CHUNK.finditer(text)]
    return spans, [text[a:b] for a, b in spans]


def attribute_to_words(model: Pipeline, text: str, row_values: np.ndarray) -> tuple[np.ndarray, float]:
    """Spread one review's per-feature SHAP values (features,) over its whitespace-separated words.

    Returns (value per word, value of the features absent from the review). Exact: the word values
    sum to the total SHAP value of the features present in the review."""
    union, _ = _parts(model)
    _, words = _word_pieces(text)
    per_word = np.zeros(len(words))
    present = np.zeros(len(row_values), dtype=bool)
    offset = 0
    for _name, vectorizer in union.transformer_list:
        vocabulary = vectorizer.vocabulary_
        occurrences: dict[int, list[list[int]]] = defaultdict(list)  # feature -> word indices per occurrence
        if vectorizer.analyzer == "word":
            preprocess, tokenize = vectorizer.build_preprocessor(), vectorizer.build_tokenizer()
            tokens = [(tok, w) for w, word in enumerate(words) for tok in tokenize(preprocess(word))]
            low, high = vectorizer.ngram_range
            for n in range(low, high + 1):
                for i in range(len(tokens) - n + 1):
                    gram = " ".join(t for t, _ in tokens[i : i + n])
                    if gram in vocabulary:
                        occurrences[vocabulary[gram]].append([w for _, w in tokens[i : i + n]])
        elif vectorizer.analyzer == "char_wb":
            analyze = vectorizer.build_analyzer()  # char_wb n-grams never cross whitespace
            for w, word in enumerate(words):
                for gram in analyze(word):
                    if gram in vocabulary:
                        occurrences[vocabulary[gram]].append([w])
        else:
            raise ReviewpipeError(f"cannot locate n-grams of analyzer {vectorizer.analyzer!r} in the text.")
        for feature, spots in occurrences.items():
            value = row_values[offset + feature]
            present[offset + feature] = True
            for spot in spots:
                per_word[spot] += value / len(spots) / len(spot)
        offset += len(vocabulary)
    return per_word, float(row_values[~present].sum())


def explain_baseline_reviews(
    explainer: Any,
    model: Pipeline,
    texts: Sequence[str],
    observed: Sequence[str] | None = None,
    top_features: int = 8,
) -> list[ReviewExplanation]:
    """Per-review explanations of the predicted class (log-odds contributions per word)."""
    from reviewpipe.models.baseline import predict_proba

    names = feature_names(model)
    union, _ = _parts(model)
    matrix = union.transform(list(texts)).tocsr()
    proba = predict_proba(model, list(texts))
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    out: list[ReviewExplanation] = []
    for start, values, _ in linear_shap_values(explainer, model, texts):
        for r in range(values.shape[0]):
            i = start + r
            c = int(proba[i].argmax())
            row = values[r, :, c]
            per_word, other = attribute_to_words(model, texts[i], row)
            spans, _ = _word_pieces(texts[i])
            pieces = [
                (texts[i][a : (spans[k + 1][0] if k + 1 < len(spans) else len(texts[i]))], float(per_word[k]))
                for k, (a, _) in enumerate(spans)
            ]
            ranked = sorted(matrix[i].indices, key=lambda f: -abs(row[f]))[:top_features]
            out.append(
                ReviewExplanation(
                    text=texts[i],
                    pieces=pieces,
                    explained_class=CLASS_LABELS[c],
                    probabilities={label: float(proba[i, k]) for k, label in enumerate(CLASS_LABELS)},
                    base_value=float(expected[c] if len(expected) > c else expected[0]),
                    unit="log-odds",
                    other=other,
                    top_features=[(str(names[f]), float(row[f])) for f in ranked],
                    observed=None if observed is None else str(observed[i]),
                )
            )
    return out


# ---------------------------------------------------------------- text models (Partition explainer)


def partition_explanations(
    predict_proba: Callable[[list[str]], np.ndarray],
    tokenizer: Any,
    texts: Sequence[str],
    max_evals: int = 300,
    batch_size: int = 32,
    observed: Sequence[str] | None = None,
) -> tuple[list[ReviewExplanation], Any]:
    """shap Partition explainer + Text masker over any texts -> (3,) probability model.

    `tokenizer` is a Hugging Face tokenizer (None: shap's default regex tokenizer).
    Returns the per-review explanations (predicted class) and the raw shap Explanation."""
    import shap

    def model(batch: Any) -> np.ndarray:
        return np.asarray(predict_proba([str(t) for t in batch]), dtype=np.float64)

    masker = shap.maskers.Text(tokenizer)
    explainer = shap.Explainer(model, masker, output_names=CLASS_LABELS, algorithm="partition")
    explanation = explainer(list(texts), max_evals=max_evals, batch_size=batch_size, silent=True)
    proba = model(list(texts))
    out = []
    for i, text in enumerate(texts):
        c = int(proba[i].argmax())
        tokens = [str(t) for t in explanation.data[i]]
        values = np.asarray(explanation.values[i])[:, c]
        base = np.atleast_1d(np.asarray(explanation.base_values[i], dtype=float))
        out.append(
            ReviewExplanation(
                text=str(text),
                pieces=[(t, float(v)) for t, v in zip(tokens, values, strict=True)],
                explained_class=CLASS_LABELS[c],
                probabilities={label: float(proba[i, k]) for k, label in enumerate(CLASS_LABELS)},
                base_value=float(base[c] if len(base) > c else base[0]),
                unit="probability",
                top_features=sorted(
                    ((t.strip(), float(v)) for t, v in zip(tokens, values, strict=True) if t.strip()),
                    key=lambda item: -abs(item[1]),
                )[:8],
                observed=None if observed is None else str(observed[i]),
            )
        )
    return out, explanation


def token_importance(explanation: Any, top_k: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Per class: tokens by mean |SHAP| over the explained reviews (a review without the token counts 0,
    so one striking rare token does not outrank words that matter across reviews, as for the baseline).

    `mean_shap_present` is the mean signed value over the token's occurrences (its direction)."""
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(CLASS_LABELS)))
    abs_sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(CLASS_LABELS)))
    counts: dict[str, int] = defaultdict(int)
    for tokens, values in zip(explanation.data, explanation.values, strict=True):
        for token, value in zip(tokens, np.asarray(values), strict=True):
            key = str(token).strip().lower()
            if key:  # special tokens ([CLS], [SEP]) come back as empty strings
                sums[key] += value
                abs_sums[key] += np.abs(value)
                counts[key] += 1
    reviews = max(len(explanation.data), 1)
    out: dict[str, list[dict[str, Any]]] = {}
    for c, label in enumerate(CLASS_LABELS):
        ranked = sorted(abs_sums, key=lambda k: (-abs_sums[k][c], k))[:top_k]
        out[label] = [
            {
                "feature": k,
                "kind": "token",
                "mean_abs_shap": float(abs_sums[k][c] / reviews),
                "mean_shap_present": float(sums[k][c] / counts[k]),
                "occurrences": counts[k],
            }
            for k in ranked
        ]
    return out


# ---------------------------------------------------------------- plots and the HTML page


def importance_plot(importance: Mapping[str, Sequence[Mapping[str, Any]]], title: str, unit: str) -> bytes:
    """PNG: one horizontal bar chart per class (mean |SHAP|, coloured by the sign when present)."""
    import matplotlib.pyplot as plt

    from reviewpipe.figures import figure_png

    classes = list(importance)
    rows = max((len(v) for v in importance.values()), default=1)
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 0.28 * rows + 1.4), squeeze=False)
    for ax, label in zip(axes[0], classes, strict=True):
        items = list(importance[label])[::-1]
        ax.barh(
            [i["feature"] for i in items],
            [i["mean_abs_shap"] for i in items],
            color=["#2a9d8f" if i["mean_shap_present"] >= 0 else "#e76f51" for i in items],
        )
        ax.set_title(f"{label}")
        ax.set_xlabel(f"mean |SHAP| ({unit})")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"{title} (green: present, it pushes towards the class; red: away)", fontsize=10)
    return figure_png(fig)


def _highlight(explanation: ReviewExplanation) -> str:
    scale = max((abs(v) for _, v in explanation.pieces), default=0.0) or 1.0
    spans = []
    for text, value in explanation.pieces:
        alpha = min(abs(value) / scale, 1.0) * 0.85
        rgb = "42,157,143" if value >= 0 else "231,111,81"
        spans.append(
            f'<span style="background: rgba({rgb},{alpha:.2f})" title="{value:+.4f}">'
            f"{html.escape(text)}</span>"
        )
    return "".join(spans)


def render_html(sections: Sequence[Mapping[str, Any]], title: str = "reviewpipe: SHAP explanations") -> str:
    """A self-contained page: per model, the importance plot and highlighted reviews.

    Each section: {"model", "method", "unit", "plot" (relative PNG path), "reviews": [ReviewExplanation]}."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        ".review{border:1px solid #ddd;border-radius:6px;padding:.6em .8em;margin:.6em 0;line-height:1.7}"
        ".meta{font-size:.85em;color:#555}span[title]{border-radius:3px}"
        "table{border-collapse:collapse;font-size:.85em}td{padding:1px 8px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Green words push the model towards the class it predicted, red words away from it; the "
        "stronger the colour, the larger the SHAP value (hover a word for its value).</p>",
    ]
    for s in sections:
        parts.append(f"<h2>{html.escape(s['model'])} — {html.escape(s['method'])}</h2>")
        if s.get("note"):
            parts.append(f"<p>{html.escape(s['note'])}</p>")
        if s.get("plot"):
            parts.append(
                f"<img src='{html.escape(s['plot'])}' alt='{html.escape(s['model'])} importance' "
                "style='max-width:100%'>"
            )
        for r in s.get("reviews", []):
            probs = ", ".join(f"{k} {v:.2f}" for k, v in r.probabilities.items())
            other = f"; absent n-grams {r.other:+.3f}" if r.other else ""
            parts.append(
                f"<div class='review'><div class='meta'>observed <b>{html.escape(str(r.observed))}</b> · "
                f"explained (predicted) <b>{html.escape(r.explained_class)}</b> · {probs} · base "
                f"{r.base_value:.3f} {html.escape(r.unit)}{other}</div>{_highlight(r)}</div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- one model's explanation (the stage's unit)


@dataclass
class ModelExplanation:
    """What the explain stage writes for one model: importance.json, reviews.json, a plot, a page section."""

    method: str
    unit: str
    rows: int  # test reviews behind the global importance
    importance: dict[str, list[dict[str, Any]]]  # per class, top features
    reviews: list[ReviewExplanation]  # every explained review (reviews.json)
    shown: int  # how many of them the page shows
    extra: dict[str, Any] = field(default_factory=dict)

    def importance_document(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "unit": self.unit,
            "rows": self.rows,
            "top": self.importance,
            **self.extra,
        }


def sample_order(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of the test rows: every model explains a prefix of the same order."""
    return np.random.default_rng(seed).permutation(n)


def _texts(frame: Any) -> list[str]:
    return frame["review_body"].fillna("").astype(str).tolist()


def _observed(frame: Any, rows: np.ndarray) -> list[str]:
    return [CLASS_NAMES[int(s)] for s in frame["sentiment"].iloc[rows]]


def explain_baseline(
    model: Pipeline,
    train: Any,
    test: Any,
    order: np.ndarray,
    *,
    background_rows: int | None,
    global_rows: int | None,
    reviews: int,
    top_k: int,
    seed: int,
) -> ModelExplanation:
    """LinearExplainer against the mean TF-IDF of `background_rows` sampled training reviews (None: all);
    global importance over the first `global_rows` test reviews of `order` (None: all), `reviews` shown."""
    background = train["review_body"].fillna("").astype(str)
    background = background.sample(
        min(background_rows or len(background), len(background)), random_state=seed
    )
    explainer = linear_explainer(model, background.tolist())
    texts = _texts(test)
    global_texts = [texts[i] for i in (order[:global_rows] if global_rows else order)]
    shown = order[:reviews]
    return ModelExplanation(
        method="LinearExplainer (TF-IDF n-grams, per-class margin)",
        unit="log-odds",
        rows=len(global_texts),
        importance=global_importance(explainer, model, global_texts, top_k, analyzer="word"),
        reviews=explain_baseline_reviews(
            explainer, model, [texts[i] for i in shown], observed=_observed(test, shown)
        ),
        shown=len(shown),
        extra={"char_ngrams": global_importance(explainer, model, global_texts, top_k, analyzer="char")},
    )


def explain_text_model(
    predictor: Any,
    test: Any,
    order: np.ndarray,
    *,
    sample: int,
    reviews: int,
    top_k: int,
    max_evals: int,
    batch_size: int,
) -> ModelExplanation:
    """Partition explainer over the first `sample` test reviews of `order` for a model with
    `predict_proba(texts)` and a Hugging Face `tokenizer` (BERT); `reviews` of them shown."""
    rows = order[:sample]
    explained, raw = partition_explanations(
        predictor.predict_proba,
        predictor.tokenizer,
        [_texts(test)[i] for i in rows],
        max_evals=max_evals,
        batch_size=batch_size,
        observed=_observed(test, rows),
    )
    return ModelExplanation(
        method="Partition explainer, Text masker (class probabilities)",
        unit="probability",
        rows=len(rows),
        importance=token_importance(raw, top_k),
        reviews=explained,
        shown=min(reviews, len(explained)),
    )


def page_section(name: str, result: ModelExplanation) -> dict[str, Any]:
    """One model's part of index.html (render_html)."""
    return {
        "model": name,
        "method": result.method,
        "unit": result.unit,
        "plot": f"{name}/importance.png",
        "reviews": result.reviews[: result.shown],
        "note": f"Importance over {result.rows} test reviews; SHAP values in {result.unit}.",
    }
