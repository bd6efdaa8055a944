"""Pre-training bias metrics: hand-computed frames, smclarify's published test values, edge cases,
and a property test against smclarify itself (imported only here, as the oracle)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pytest import approx

from reviewpipe.bias.pretraining import (
    PRE_TRAINING_METRICS,
    BiasMetricError,
    class_imbalance,
    conditional_demographic_disparity,
    difference_in_positive_proportions,
    js_divergence,
    kl_divergence,
    ks_distance,
    lp_norm,
    positive_label_mask,
    pre_training_facet_report,
    pre_training_report,
    total_variation_distance,
)

# ---------------------------------------------------------------- hand-computed

# Blouses: 3 positive, 1 not; Dresses: 2 positive, 4 not (sentiment 1 is positive).
SMALL = pd.DataFrame(
    {
        "product_category": ["Blouses"] * 4 + ["Dresses"] * 6,
        "sentiment": [1, 1, 1, -1, 1, 0, -1, 1, 0, -1],
        "age_band": ["<25", "<25", "25-34", "25-34", "<25", "<25", "<25", "25-34", "25-34", "25-34"],
    }
)
Y = positive_label_mask(SMALL.sentiment, [1])
D = SMALL.product_category == "Blouses"


def test_hand_computed_small_frame() -> None:
    # d = Blouses (n_d = 4, q_d = 3/4), a = Dresses (n_a = 6, q_a = 2/6)
    assert class_imbalance(D) == approx((6 - 4) / 10)
    assert difference_in_positive_proportions(Y, D) == approx(2 / 6 - 3 / 4)
    p_a, p_d = (4 / 6, 2 / 6), (1 / 4, 3 / 4)  # P(negative), P(positive)
    assert kl_divergence(Y, D) == approx(sum(a * math.log(a / d) for a, d in zip(p_a, p_d, strict=True)))
    mix = [(a + d) / 2 for a, d in zip(p_a, p_d, strict=True)]
    assert js_divergence(Y, D) == approx(
        0.5 * sum(a * math.log(a / m) for a, m in zip(p_a, mix, strict=True))
        + 0.5 * sum(d * math.log(d / m) for d, m in zip(p_d, mix, strict=True))
    )
    assert lp_norm(Y, D) == approx(math.sqrt(2) * 5 / 12)
    assert lp_norm(Y, D, p=1) == approx(2 * 5 / 12)
    assert total_variation_distance(Y, D) == approx(5 / 12)
    assert ks_distance(Y, D) == approx(5 / 12)
    # <25: positives B,B,D (A = 2/3), negatives D,D (D = 0) -> DD = -2/3, 5 rows
    # 25-34: positives B,D (A = 1/2), negatives B,D,D (D = 1/3) -> DD = -1/6, 5 rows
    assert conditional_demographic_disparity(Y, D, SMALL.age_band) == approx((5 * -2 / 3 + 5 * -1 / 6) / 10)


def test_facet_d_is_the_value_and_a_is_the_rest() -> None:
    # Swapping the roles flips the sign of CI and DPL (Clarify: CI = (n_a - n_d) / n).
    assert class_imbalance(~D) == approx(-class_imbalance(D))
    assert difference_in_positive_proportions(Y, ~D) == approx(-difference_in_positive_proportions(Y, D))
    assert kl_divergence(Y, ~D) != approx(kl_divergence(Y, D))  # KL is not symmetric
    assert js_divergence(Y, ~D) == approx(js_divergence(Y, D))


def test_label_values_binarise_like_clarify() -> None:
    assert positive_label_mask(pd.Series([-1, 0, 1, 1]), [1]).tolist() == [False, False, True, True]
    assert positive_label_mask(pd.Series([-1, 0, 1]), [0, 1]).tolist() == [False, True, True]
    # types converted when nothing matches, as smclarify does
    assert positive_label_mask(pd.Series([-1, 0, 1]), ["1"]).tolist() == [False, False, True]
    assert positive_label_mask(pd.Series(["-1", "0", "1"]), [1]).tolist() == [False, False, True]
    with pytest.raises(BiasMetricError, match="label_values is empty"):
        positive_label_mask(pd.Series([1]), [])


def test_masks_must_be_boolean() -> None:
    with pytest.raises(TypeError, match="boolean mask"):
        class_imbalance(pd.Series([0, 1, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        difference_in_positive_proportions(pd.Series([True, False]), pd.Series([True, False, True]))


# ---------------------------------------------------------------- smclarify's published unit-test values
# From aws/amazon-sagemaker-clarify tests/unit/bias/metrics/test_metrics.py and tests/unit/bias/test_report.py.

DF_B = pd.Series(["M", "F", "F", "M", "F", "M", "F", "F", "M", "M", "F", "F"])
DF_M = pd.Series(list("MOMMFOOFMMFFOFMFOFMMFFOO"))
DATASET_X = pd.Series(list("abbcaabcbcbb"))
DATASET_LABEL = pd.Series([0, 0, 1, 1, 2, 1, 0, 1, 2, 2, 0, 2])


def test_smclarify_published_ci() -> None:
    assert class_imbalance(DF_B == "F") == approx(-1 / 6)
    assert class_imbalance(DF_B == "M") == approx(1 / 6)
    assert class_imbalance(DF_M == "M") == approx(1 / 3)
    assert class_imbalance(DF_M == "F") == approx(1 / 4)
    assert class_imbalance(DF_M == "O") == approx(5 / 12)


def test_smclarify_published_dpl() -> None:
    x, y = pd.Series(["a", "a", "b", "b"]), pd.Series([1, 1, 0, 1]) == 1
    assert difference_in_positive_proportions(y, x == "a") == -0.5
    assert difference_in_positive_proportions(y, x == "b") == 0.5


def test_smclarify_published_distribution_metrics() -> None:
    label = pd.Series([True, True, True, False, False, False])
    balanced = pd.Series([True, False, False, False, True, False])
    assert kl_divergence(label, balanced) == 0.0
    assert js_divergence(label, balanced) == 0.0
    assert lp_norm(label, balanced) == 0.0
    # multi-facet, multi-category: d = x in {a, c}, positive = label in {1, 2}
    d = DATASET_X.isin(["a", "c"])
    y = positive_label_mask(DATASET_LABEL, [1, 2])
    assert kl_divergence(y, d) == approx(0.2938933)
    assert js_divergence(y, d) == approx(0.06465997)
    assert lp_norm(y, d) == approx(0.471404520)
    assert ks_distance(y, DATASET_X != "b") == approx(0.33333333)
    # KS on string labels
    ks_label = positive_label_mask(pd.Series(["1", "0", "0", "1", "1"]), ["1"])
    assert ks_distance(ks_label, pd.Series(list("aabbb")) == "b") == approx(0.16666666)
    # JS computed by hand in smclarify's test
    res = js_divergence(pd.Series([True, True, True, True, False, False]), balanced)
    pa, pd_, p = np.array([0.5, 0.5]), np.array([0.25, 0.75]), np.array([0.375, 0.625])
    assert res == approx(0.5 * (np.sum(pa * np.log(pa / p)) + np.sum(pd_ * np.log(pd_ / p))))


def test_smclarify_published_cdd() -> None:
    x = pd.Series(list("MMMFFFFMMMMFMMFMFFMMFMMF"))
    positive = pd.Series([0, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 1, 0]) == 1
    group = pd.Series([1, 0, 2, 2, 1, 1, 2, 1, 1, 2, 0, 1, 2, 0, 1, 1, 1, 2, 0, 1, 0, 0, 1, 1])
    assert conditional_demographic_disparity(positive, x == "F", group) == approx(0.3982142857)
    assert conditional_demographic_disparity(positive, x == "M", group) == approx(-0.3982142857)


# ---------------------------------------------------------------- edge cases


def test_facet_value_with_zero_rows_of_one_label_is_an_error_for_distributions() -> None:
    df = pd.DataFrame({"f": ["x", "x", "y", "y", "y"], "s": [1, 1, 1, -1, 0], "g": ["g"] * 5})
    report = pre_training_facet_report(df, "f", "s", [1], "g")
    metrics = {m["name"]: m for m in report[0]["metrics"]}  # "x": only positives
    for name in ("KL", "JS", "LP", "TVD", "KS"):
        assert metrics[name]["value"] is None
        assert "facet d has no rows with a negative label" in metrics[name]["error"]
    assert metrics["CI"]["value"] == approx(1 / 5)
    assert metrics["DPL"]["value"] == approx(1 / 3 - 1)  # still well defined
    assert "error" not in metrics["CDDL"]


def test_smclarify_would_truncate_where_we_refuse() -> None:
    # smclarify's published KL for this frame is -0.366516 (a negative "divergence"): it drops the label
    # value facet d lacks. We refuse with a reason instead.
    with pytest.raises(BiasMetricError, match="single row"):
        kl_divergence(
            pd.Series([True, True, True, False, False, False]),
            pd.Series([True, False, False, False, False, False]),
        )


def test_single_row_facet() -> None:
    df = pd.DataFrame({"f": ["solo", "x", "x", "x"], "s": [1, 1, -1, 0], "g": ["a", "a", "b", "b"]})
    metrics = {m["name"]: m for m in pre_training_facet_report(df, "f", "s", [1], "g")[0]["metrics"]}
    assert metrics["CI"]["value"] == approx(0.5)
    assert metrics["DPL"]["value"] == approx(1 / 3 - 1)
    for name in ("KL", "JS", "LP", "TVD", "KS"):
        assert "single row" in metrics[name]["error"]


def test_all_positive_labels() -> None:
    df = pd.DataFrame({"f": ["x", "x", "y", "y"], "s": [1, 1, 1, 1], "g": ["a", "b", "a", "b"]})
    for entry in pre_training_facet_report(df, "f", "s", [1], "g"):
        metrics = {m["name"]: m for m in entry["metrics"]}
        assert metrics["DPL"]["value"] == 0.0
        assert metrics["CI"]["value"] == 0.0
        assert "no negative labels" in metrics["CDDL"]["error"]
        for name in ("KL", "JS", "LP", "TVD", "KS"):
            assert "no rows with a negative label" in metrics[name]["error"]


def test_only_one_facet_value_and_missing_values() -> None:
    df = pd.DataFrame({"f": ["x", "x"], "s": [1, -1], "g": ["a", None]})
    metrics = {m["name"]: m for m in pre_training_facet_report(df, "f", "s", [1], "g")[0]["metrics"]}
    assert "the rest) is empty" in metrics["CI"]["error"]
    assert "missing values" in metrics["CDDL"]["error"]
    # a missing facet value is reported as its own value, not hidden in "the rest"
    df = pd.DataFrame({"f": ["x", None, "y", "y"], "s": [1, -1, 1, -1]})
    assert [r["value_or_threshold"] for r in pre_training_facet_report(df, "f", "s", [1])] == [
        "(missing)",
        "x",
        "y",
    ]


def test_report_layout_and_errors_never_raise() -> None:
    params = {
        "label": "sentiment",
        "label_values": [1],
        "facets": ["product_category", "age_band"],
        "group_variable": "age_band",
    }
    analysis = pre_training_report(SMALL, params)
    section = analysis["pre_training_bias_metrics"]
    assert analysis["version"] == "1.0"
    assert section["label"] == "sentiment" and section["label_value_or_threshold"] == "1"
    blouses = section["facets"]["product_category"][0]
    assert blouses["value_or_threshold"] == "Blouses"
    assert [m["name"] for m in blouses["metrics"]] == sorted(PRE_TRAINING_METRICS)
    assert blouses["metrics"][1] == {
        "name": "CI",
        "description": "Class Imbalance (CI)",
        "value": approx(0.2),
    }


# ---------------------------------------------------------------- property test: smclarify as the oracle


def _random_frame(rng: np.random.Generator) -> pd.DataFrame:
    n = int(rng.integers(6, 80))
    return pd.DataFrame(
        {
            "facet": rng.choice(list("PQRS")[: int(rng.integers(2, 5))], size=n),
            "label": rng.choice([-1, 0, 1], size=n, p=rng.dirichlet([1, 1, 1])),
            "group": rng.choice(["g1", "g2", "g3"][: int(rng.integers(1, 4))], size=n),
        }
    )


def test_matches_smclarify_on_random_frames() -> None:
    from smclarify.bias.metrics import pretraining as oracle

    ours = {
        "CI": lambda y, d, g: class_imbalance(d),
        "DPL": lambda y, d, g: difference_in_positive_proportions(y, d),
        "KL": lambda y, d, g: kl_divergence(y, d),
        "JS": lambda y, d, g: js_divergence(y, d),
        "LP": lambda y, d, g: lp_norm(y, d),
        "TVD": lambda y, d, g: total_variation_distance(y, d),
        "KS": lambda y, d, g: ks_distance(y, d),
        "CDDL": lambda y, d, g: conditional_demographic_disparity(y, d, g),
    }
    theirs = {
        "CI": lambda x, y, d, g: oracle.CI(x, d),
        "DPL": lambda x, y, d, g: oracle.DPL(x, d, y),
        "KL": lambda x, y, d, g: oracle.KL(y, d),
        "JS": lambda x, y, d, g: oracle.JS(y, d),
        "LP": lambda x, y, d, g: oracle.LP(y, d),
        "TVD": lambda x, y, d, g: oracle.TVD(y, d),
        "KS": lambda x, y, d, g: oracle.KS(y, d),
        "CDDL": lambda x, y, d, g: oracle.CDDL(x, d, y, g),
    }
    rng = np.random.default_rng(7)
    compared = refused = 0
    for _ in range(80):
        frame = _random_frame(rng)
        label_values = [[1], [0, 1]][int(rng.integers(0, 2))]
        y = positive_label_mask(frame.label, label_values)
        for value in frame.facet.unique():
            d = frame.facet == value
            for name in ours:
                try:
                    expected = theirs[name](frame.facet, y, d, frame.group)
                except ValueError:
                    with pytest.raises(BiasMetricError):
                        ours[name](y, d, frame.group)
                    continue
                try:
                    got = ours[name](y, d, frame.group)
                except BiasMetricError:
                    # only where smclarify silently drops a label value one facet lacks
                    each_side_has_both_labels = all(y[side].any() and (~y[side]).any() for side in (d, ~d))
                    assert name in {"KL", "JS", "LP", "TVD", "KS"} and not each_side_has_both_labels
                    refused += 1
                    continue
                assert got == approx(expected, rel=1e-9, abs=1e-12), (name, value, frame)
                compared += 1
    assert compared > 1000 and refused > 0


def test_report_matches_smclarify_bias_report() -> None:
    from smclarify.bias.report import FacetColumn, LabelColumn, StageType, bias_report

    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "category": rng.choice(["Tops", "Dresses", "Jackets"], 300),
            "sentiment": rng.choice([-1, 0, 1], 300),
            "band": rng.choice(["<25", "25-34"], 300),
        }
    )
    expected = bias_report(
        frame,
        FacetColumn("category"),
        LabelColumn("sentiment", frame.sentiment.astype("category"), [1]),
        StageType.PRE_TRAINING,
        group_variable=frame.band,
    )
    got = pre_training_facet_report(frame, "category", "sentiment", [1], "band")
    expected_by_value = {e["value_or_threshold"]: e["metrics"] for e in expected}
    assert set(expected_by_value) == {g["value_or_threshold"] for g in got}
    for entry in got:
        theirs = expected_by_value[entry["value_or_threshold"]]
        assert [m["name"] for m in entry["metrics"]] == [m["name"] for m in theirs]
        assert [m["description"] for m in entry["metrics"]] == [m["description"] for m in theirs]
        assert [m["value"] for m in entry["metrics"]] == [approx(m["value"]) for m in theirs]
