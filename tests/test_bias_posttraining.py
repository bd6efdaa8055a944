"""Post-training bias metrics: smclarify's published values, hand-computed cases, the analysis.json
that evaluate writes, and a property test against smclarify (imported only here, as the oracle)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pytest import approx

from reviewpipe.bias.posttraining import (
    POST_TRAINING_METRICS,
    BiasMetricError,
    accuracy_difference,
    conditional_demographic_disparity_predicted,
    difference_in_acceptance_rates,
    difference_in_conditional_acceptance,
    difference_in_conditional_rejection,
    difference_in_positive_proportions_predicted,
    difference_in_rejection_rates,
    disparate_impact,
    generalized_entropy,
    post_training_report,
    recall_difference,
    specificity_difference,
    treatment_equality,
)
from reviewpipe.bias.pretraining import positive_label_mask
from reviewpipe.errors import ReviewpipeError

# smclarify tests/unit/bias/metrics/test_metrics.py: dfBinary
DF_B = pd.Series(["M", "F", "F", "M", "F", "M", "F", "F", "M", "M", "F", "F"])
LABEL = pd.Series([0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0]) == 1
PRED = pd.Series([1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0]) == 1
F, M = DF_B == "F", DF_B == "M"


def test_smclarify_published_binary_values() -> None:
    assert disparate_impact(PRED, F) == approx(10 / 7)
    assert disparate_impact(PRED, M) == approx(7 / 10)
    assert difference_in_conditional_acceptance(LABEL, PRED, F) == approx(1 / 4)
    assert difference_in_conditional_acceptance(LABEL, PRED, M) == approx(-1 / 4)
    assert difference_in_conditional_rejection(LABEL, PRED, F) == approx(1 / 3)
    assert difference_in_conditional_rejection(LABEL, PRED, M) == approx(-1 / 3)
    assert recall_difference(LABEL, PRED, F) == approx(-2 / 3)
    assert recall_difference(LABEL, PRED, M) == approx(2 / 3)
    assert difference_in_rejection_rates(LABEL, PRED, F) == approx(1 / 3)
    assert difference_in_rejection_rates(LABEL, PRED, M) == approx(-1 / 3)
    assert accuracy_difference(LABEL, PRED, F) == approx(-13 / 35)
    assert accuracy_difference(LABEL, PRED, M) == approx(13 / 35)
    assert difference_in_acceptance_rates(LABEL, PRED, F) == approx(-1 / 2)
    assert difference_in_acceptance_rates(LABEL, PRED, M) == approx(1 / 2)
    assert treatment_equality(LABEL, PRED, F) == approx(-1 / 2)
    assert treatment_equality(LABEL, PRED, M) == approx(1 / 2)


def test_smclarify_published_edge_values() -> None:
    zero_for_m = pd.Series([0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1]) == 1
    assert disparate_impact(zero_for_m, F) == float("inf")
    all_m_positive = pd.Series([1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1]) == 1
    assert difference_in_rejection_rates(LABEL, all_m_positive, F) == approx(0.5)
    assert difference_in_rejection_rates(LABEL, all_m_positive, M) == approx(-0.5)
    with pytest.raises(BiasMetricError, match="facet d is empty"):
        disparate_impact(PRED, DF_B == "X")
    with pytest.raises(BiasMetricError, match="the rest\\) is empty"):
        disparate_impact(pd.Series([False, True]), pd.Series([True, True]))


def test_hand_computed() -> None:
    # facet d: TP=1 FP=1 FN=1 TN=1; facet a: TP=2 FP=0 FN=0 TN=2
    y = pd.Series([1, 0, 1, 0, 1, 1, 0, 0]) == 1
    yhat = pd.Series([1, 1, 0, 0, 1, 1, 0, 0]) == 1
    d = pd.Series([True] * 4 + [False] * 4)
    assert difference_in_positive_proportions_predicted(yhat, d) == approx(0.5 - 0.5)
    assert disparate_impact(yhat, d) == approx(1.0)
    assert accuracy_difference(y, yhat, d) == approx(1 - 0.5)
    assert recall_difference(y, yhat, d) == approx(1 - 0.5)
    assert specificity_difference(y, yhat, d) == approx(0.5 - 1)
    assert difference_in_acceptance_rates(y, yhat, d) == approx(1 - 0.5)  # precision
    assert difference_in_rejection_rates(y, yhat, d) == approx(0.5 - 1)  # TN / predicted negatives
    assert difference_in_conditional_acceptance(y, yhat, d) == approx(2 / 2 - 2 / 2)
    assert difference_in_conditional_rejection(y, yhat, d) == approx(2 / 2 - 2 / 2)
    assert treatment_equality(y, yhat, d) == approx(1 / 1 - 0.0)  # FN/FP: d = 1, a = 0/0 = 0
    # benefits b = yhat - y + 1: [1, 2, 0, 1, 1, 1, 1, 1], mean 1 -> GE = sum(b^2 - 1) / (8 * 2)
    assert generalized_entropy(y, yhat) == approx(((1 + 4 + 0 + 1 * 5) - 8) / 16)
    with pytest.raises(BiasMetricError, match="false negatives"):
        generalized_entropy(pd.Series([True, True]), pd.Series([False, False]))
    with pytest.raises(BiasMetricError, match="not provided"):
        conditional_demographic_disparity_predicted(yhat, d, None)


def _random_frame(rng: np.random.Generator) -> pd.DataFrame:
    n = int(rng.integers(6, 60))
    return pd.DataFrame(
        {
            "facet": rng.choice(list("PQR")[: int(rng.integers(2, 4))], size=n),
            "label": rng.choice([-1, 0, 1], size=n, p=rng.dirichlet([1, 1, 1])),
            "pred": rng.choice([-1, 0, 1], size=n, p=rng.dirichlet([1, 1, 1])),
            "group": rng.choice(["g1", "g2"], size=n),
        }
    )


def test_matches_smclarify_on_random_frames() -> None:
    from smclarify.bias.metrics import posttraining as oracle

    pairs = {
        "DPPL": (
            lambda y, p, d, g: difference_in_positive_proportions_predicted(p, d),
            lambda x, y, p, d, g: oracle.DPPL(x, d, p),
        ),
        "DI": (lambda y, p, d, g: disparate_impact(p, d), lambda x, y, p, d, g: oracle.DI(x, d, p)),
        "DCA": (
            lambda y, p, d, g: difference_in_conditional_acceptance(y, p, d),
            lambda x, y, p, d, g: oracle.DCA(x, d, y, p),
        ),
        "DCR": (
            lambda y, p, d, g: difference_in_conditional_rejection(y, p, d),
            lambda x, y, p, d, g: oracle.DCR(x, d, y, p),
        ),
        "RD": (lambda y, p, d, g: recall_difference(y, p, d), lambda x, y, p, d, g: oracle.RD(x, d, y, p)),
        "SD": (
            lambda y, p, d, g: specificity_difference(y, p, d),
            lambda x, y, p, d, g: oracle.SD(x, d, y, p),
        ),
        "DAR": (
            lambda y, p, d, g: difference_in_acceptance_rates(y, p, d),
            lambda x, y, p, d, g: oracle.DAR(x, d, y, p),
        ),
        "DRR": (
            lambda y, p, d, g: difference_in_rejection_rates(y, p, d),
            lambda x, y, p, d, g: oracle.DRR(x, d, y, p),
        ),
        "AD": (lambda y, p, d, g: accuracy_difference(y, p, d), lambda x, y, p, d, g: oracle.AD(x, d, y, p)),
        "TE": (lambda y, p, d, g: treatment_equality(y, p, d), lambda x, y, p, d, g: oracle.TE(x, d, y, p)),
        "CDDPL": (
            lambda y, p, d, g: conditional_demographic_disparity_predicted(p, d, g),
            lambda x, y, p, d, g: oracle.CDDPL(x, d, p, g),
        ),
        "GE": (lambda y, p, d, g: generalized_entropy(y, p), lambda x, y, p, d, g: oracle.GE(y, p)),
    }
    rng = np.random.default_rng(3)
    compared = 0
    for _ in range(40):
        frame = _random_frame(rng)
        y, p = positive_label_mask(frame.label, [1]), positive_label_mask(frame.pred, [1])
        for value in frame.facet.unique():
            d = frame.facet == value
            for name, (ours, theirs) in pairs.items():
                try:
                    expected = theirs(frame.facet, y, p, d, frame.group)
                except ValueError:
                    with pytest.raises(BiasMetricError):
                        ours(y, p, d, frame.group)
                    continue
                got = ours(y, p, d, frame.group)
                assert got == approx(expected, rel=1e-9, abs=1e-12), (name, value, frame)
                compared += 1
    assert compared > 600


PARAMS = {
    "label": "sentiment",
    "label_values": [1],
    "predicted_label": "predicted_sentiment",
    "facets": ["product_category", "age_band"],
    "group_variable": "age_band",
    "post_training_metrics": list(POST_TRAINING_METRICS),
}


def test_post_training_report_is_clarify_layout_and_json_safe() -> None:
    frame = pd.DataFrame(
        {
            "product_category": ["Tops", "Tops", "Tops", "Dresses", "Dresses", "Dresses"],
            "age_band": ["<25", "25-34", "<25", "25-34", "<25", "25-34"],
            "sentiment": [1, 0, -1, 1, 1, -1],
            "predicted_sentiment": [1, 1, -1, 0, 1, -1],
        }
    )
    analysis = post_training_report(frame, PARAMS)
    section = analysis["post_training_bias_metrics"]
    assert analysis["version"] == "1.0" and "pre_training_bias_metrics" not in analysis
    assert section["label"] == "sentiment" and section["label_value_or_threshold"] == "1"
    assert [e["value_or_threshold"] for e in section["facets"]["product_category"]] == ["Dresses", "Tops"]
    tops = {m["name"]: m for m in section["facets"]["product_category"][1]["metrics"]}
    assert list(tops) == sorted(POST_TRAINING_METRICS)
    assert tops["DPPL"] == {
        "name": "DPPL",
        "value": approx(1 / 3 - 2 / 3),  # q^_a - q^_d
        "description": "Difference in Positive Proportions in Predicted Labels (DPPL)",
    }
    # Dresses: FN/FP = 1/0 -> TE = inf - 0; written as Clarify writes it
    assert section["facets"]["product_category"][0]["metrics"][-1] == {
        "name": "TE",
        "description": "Treatment Equality (TE)",
        "value": "Infinity",
    }
    json.loads(json.dumps(analysis, allow_nan=False))  # strict JSON: no NaN / Infinity tokens


def test_post_training_report_names_missing_columns() -> None:
    with pytest.raises(ReviewpipeError, match=r"\['predicted_sentiment'\]"):
        post_training_report(
            pd.DataFrame({"sentiment": [1], "product_category": ["a"], "age_band": ["x"]}), PARAMS
        )


def test_descriptions_are_clarifys() -> None:
    from smclarify.bias.metrics import POSTTRAINING_METRICS, PRETRAINING_METRICS, common

    from reviewpipe.bias.pretraining import PRE_TRAINING_METRICS

    theirs = {f.__name__: common.metric_description(f) for f in [*PRETRAINING_METRICS, *POSTTRAINING_METRICS]}
    ours = {name: desc for name, (desc, _) in {**PRE_TRAINING_METRICS, **POST_TRAINING_METRICS}.items()}
    assert ours == {name: theirs[name] for name in ours}
    assert set(theirs) - set(ours) == {"FT"}  # Flip Test needs numeric features and k-NN: not computed
