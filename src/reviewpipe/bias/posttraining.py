"""SageMaker Clarify post-training bias metrics, one small pure function each.

Definitions follow Clarify's documentation and smclarify 0.5 (`smclarify.bias.metrics.posttraining`
and `common`), including its conventions for empty denominators (0/0 = 0, x/0 = inf, and a
difference of two infinities = 0). Arguments are boolean masks: `label` (observed label positive),
`predicted` (predicted label positive), `facet` (True for facet d; facet a is the rest).
Clarify's Flip Test (FT) needs numeric features and a k-NN model; it is not computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from reviewpipe.bias.clarify_report import bias_metrics_section, build_analysis, require_columns
from reviewpipe.bias.pretraining import (
    BiasMetricError,
    as_mask,
    compute_metrics,
    conditional_demographic_disparity,
    difference_in_positive_proportions,
    divide,
    facet_column,
    facet_sizes,
    facet_values,
    positive_label_mask,
    same_length,
)

INF = float("inf")


def _confusion(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> dict[str, dict[str, int]]:
    """TP/FP/FN/TN counts for facet a (the rest) and facet d; raises when a facet is empty."""
    y, yhat, d = as_mask(label, "label"), as_mask(predicted, "predicted label"), as_mask(facet, "facet")
    same_length(label=y, predicted=yhat, facet=d)
    facet_sizes(d)
    out = {}
    for side, rows in (("a", ~d), ("d", d)):
        out[side] = {
            "TP": int((y & yhat & rows).sum()),
            "FP": int((~y & yhat & rows).sum()),
            "FN": int((y & ~yhat & rows).sum()),
            "TN": int((~y & ~yhat & rows).sum()),
        }
    return out


def _difference(first: float, second: float) -> float:
    """first - second, with smclarify's rule that two equal infinities differ by 0."""
    if first == second and first == INF:
        return 0.0
    return first - second


def difference_in_positive_proportions_predicted(predicted: ArrayLike, facet: ArrayLike) -> float:
    """DPPL = q^_a - q^_d: DPL computed on the predicted labels."""
    return difference_in_positive_proportions(predicted, facet)


def disparate_impact(predicted: ArrayLike, facet: ArrayLike) -> float:
    """DI = q^_d / q^_a, the ratio of predicted-positive shares (1 = parity; inf when q^_a = 0)."""
    yhat, d = as_mask(predicted, "predicted label"), as_mask(facet, "facet")
    same_length(predicted=yhat, facet=d)
    n_a, n_d = facet_sizes(d)
    return divide((yhat & d).sum() / n_d, (yhat & ~d).sum() / n_a)


def _rate_gap(
    label: ArrayLike,
    predicted: ArrayLike,
    facet: ArrayLike,
    numerator: tuple[str, ...],
    denominator: tuple[str, ...],
    first: str,
) -> float:
    """rate(first facet) - rate(other facet), rate = sum of `numerator` cells / sum of `denominator`
    cells of each facet's confusion matrix (smclarify's division and infinity rules)."""
    c = _confusion(label, predicted, facet)
    rate = {s: divide(sum(c[s][k] for k in numerator), sum(c[s][k] for k in denominator)) for s in ("a", "d")}
    return _difference(rate[first], rate["d" if first == "a" else "a"])


def difference_in_conditional_acceptance(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> float:
    """DCA = c_a - c_d with c = n^(1) / n^_(1), observed over predicted positives."""
    return _rate_gap(label, predicted, facet, ("TP", "FN"), ("TP", "FP"), first="a")


def difference_in_conditional_rejection(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> float:
    """DCR = r_d - r_a with r = n^(0) / n^_(0), observed over predicted negatives."""
    return _rate_gap(label, predicted, facet, ("TN", "FP"), ("TN", "FN"), first="d")


def recall_difference(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> float:
    """RD = recall_a - recall_d, recall = TP / (TP + FN)."""
    return _rate_gap(label, predicted, facet, ("TP",), ("TP", "FN"), first="a")


def specificity_difference(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> float:
    """SD = specificity_d - specificity_a, specificity = TN / (TN + FP)."""
    return _rate_gap(label, predicted, facet, ("TN",), ("TN", "FP"), first="d")


def difference_in_acceptance_rates(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> float:
    """DAR = precision_a - precision_d, precision = TP / (TP + FP)."""
    return _rate_gap(label, predicted, facet, ("TP",), ("TP", "FP"), first="a")


def difference_in_rejection_rates(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> float:
    """DRR = rr_d - rr_a, rejection rate rr = TN / (TN + FN)."""
    return _rate_gap(label, predicted, facet, ("TN",), ("TN", "FN"), first="d")


def accuracy_difference(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> float:
    """AD = accuracy_a - accuracy_d."""
    return _rate_gap(label, predicted, facet, ("TP", "TN"), ("TP", "TN", "FP", "FN"), first="a")


def treatment_equality(label: ArrayLike, predicted: ArrayLike, facet: ArrayLike) -> float:
    """TE = FN_d / FP_d - FN_a / FP_a."""
    return _rate_gap(label, predicted, facet, ("FN",), ("FP",), first="d")


def generalized_entropy(label: ArrayLike, predicted: ArrayLike, alpha: float = 2) -> float:
    """GE(alpha) over all rows with benefit b_i = yhat_i - y_i + 1:
    GE = 1 / (n alpha (alpha - 1)) sum_i ((b_i / mean b)^alpha - 1). Clarify uses alpha = 2.
    It does not depend on the facet (Clarify reports the same value for every facet value)."""
    if alpha in (0, 1):
        raise BiasMetricError("generalized entropy is not defined here for alpha 0 or 1")
    y, yhat = as_mask(label, "label"), as_mask(predicted, "predicted label")
    same_length(label=y, predicted=yhat)
    if len(y) == 0:
        raise BiasMetricError("dataset must be non-empty")
    benefit = yhat.astype(float) - y.astype(float) + 1
    mean = benefit.mean()
    if mean == 0:
        raise BiasMetricError("all predicted labels are false negatives; generalized entropy is undefined")
    return float(np.sum((benefit / mean) ** alpha - 1) / (len(y) * alpha * (alpha - 1)))


def conditional_demographic_disparity_predicted(
    predicted: ArrayLike, facet: ArrayLike, group: ArrayLike | None
) -> float:
    """CDDPL: conditional demographic disparity computed on the predicted labels."""
    if group is None:
        raise BiasMetricError("group variable is empty or not provided")
    return conditional_demographic_disparity(predicted, facet, group)


# Clarify name -> (Clarify's description, function of (label, predicted, facet, group)).
POST_TRAINING_METRICS: dict[str, tuple[str, Any]] = {
    "AD": ("Accuracy Difference (AD)", lambda y, p, d, g: accuracy_difference(y, p, d)),
    "CDDPL": (
        "Conditional Demographic Disparity in Predicted Labels (CDDPL)",
        lambda y, p, d, g: conditional_demographic_disparity_predicted(p, d, g),
    ),
    "DAR": (
        "Difference in Acceptance Rates (DAR)",
        lambda y, p, d, g: difference_in_acceptance_rates(y, p, d),
    ),
    "DCA": (
        "Difference in Conditional Acceptance (DCA)",
        lambda y, p, d, g: difference_in_conditional_acceptance(y, p, d),
    ),
    "DCR": (
        "Difference in Conditional Rejection (DCR)",
        lambda y, p, d, g: difference_in_conditional_rejection(y, p, d),
    ),
    "DI": ("Disparate Impact (DI)", lambda y, p, d, g: disparate_impact(p, d)),
    "DPPL": (
        "Difference in Positive Proportions in Predicted Labels (DPPL)",
        lambda y, p, d, g: difference_in_positive_proportions_predicted(p, d),
    ),
    "DRR": ("Difference in Rejection Rates (DRR)", lambda y, p, d, g: difference_in_rejection_rates(y, p, d)),
    "GE": ("Generalized Entropy (GE)", lambda y, p, d, g: generalized_entropy(y, p)),
    "RD": ("Recall Difference (RD)", lambda y, p, d, g: recall_difference(y, p, d)),
    "SD": ("Specificity Difference (SD)", lambda y, p, d, g: specificity_difference(y, p, d)),
    "TE": ("Treatment Equality (TE)", lambda y, p, d, g: treatment_equality(y, p, d)),
}


def post_training_facet_report(
    frame: pd.DataFrame,
    facet: str,
    label: str,
    predicted_label: str,
    label_values: Sequence[Any],
    group_variable: str | None = None,
    metrics: Sequence[str] = tuple(POST_TRAINING_METRICS),
) -> list[dict[str, Any]]:
    """Clarify's per-facet list: one entry per facet value (that value against the rest).
    Observed and predicted labels are binarised with the same `label_values`, as Clarify does."""
    y = as_mask(positive_label_mask(frame[label], label_values), "label")
    yhat = as_mask(positive_label_mask(frame[predicted_label], label_values), "predicted label")
    group = frame[group_variable].reset_index(drop=True) if group_variable else None
    column = facet_column(frame[facet])
    return [
        {
            "value_or_threshold": value,
            "metrics": compute_metrics(
                POST_TRAINING_METRICS, metrics, y, yhat, (column == value).to_numpy(dtype=bool), group
            ),
        }
        for value in facet_values(column)
    ]


def post_training_report(frame: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    """Clarify's analysis.json (`post_training_bias_metrics`) for one model's predictions.

    `frame` has the facet columns, the observed label column (`params.label`, e.g. sentiment)
    and the predicted label column (`params.predicted_label`, same values as the label);
    `params` is the `bias` params section. The evaluate stage writes the result to
    reports/bias/post_training/<model>/analysis.json (e.g. with `reviewpipe.storage.write_json`)."""
    label, predicted = params["label"], params.get("predicted_label", "predicted_sentiment")
    group = params.get("group_variable") or None
    facets = list(params["facets"])
    require_columns(frame, [label, predicted, *facets, *([group] if group else [])], "post-training bias")
    label_values = list(params["label_values"])
    metrics = list(params.get("post_training_metrics") or POST_TRAINING_METRICS)
    section = bias_metrics_section(
        label,
        label_values,
        {
            facet: post_training_facet_report(frame, facet, label, predicted, label_values, group, metrics)
            for facet in facets
        },
    )
    return build_analysis(post_training=section)
