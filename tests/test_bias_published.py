"""smclarify's own published report values (aws/amazon-sagemaker-clarify tests/unit/bias/test_report.py),
reproduced through our report functions, pre- and post-training, on the same frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pytest import approx

from reviewpipe.bias.posttraining import post_training_facet_report
from reviewpipe.bias.pretraining import pre_training_facet_report

# test_report_continuous_data: facet x in (2, 4], group z. smclarify deems the integer labels continuous
# there, so its label value [0] is a threshold: positive means y (and yhat) in (0, 1], i.e. == 1.
DF_CONT = pd.DataFrame(
    {
        "x": [0, 3, 3, 0, 4, 0, 3, 3, 0, 3, 4, 3, 3, 0, 0, 0, 0, 3, 0, 3, 3, 0, 3, 0],
        "y": [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0],
        "z": [0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0],
        "yhat": [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1],
    }
)
DF_CONT["x_band"] = np.where(DF_CONT.x > 2, "(2, 4]", "(-inf, 2]")

# test_label_values: label (and prediction) in {p, q} is positive, group z.
DF_LABELS = pd.DataFrame(
    {"x": list("abbcc"), "y": list("pqrpq"), "z": [1, 1, 1, 0, 0], "yhat": list("ppqpp")}
)


def _values(report: list[dict], value: str) -> dict[str, float]:
    return {
        m["name"]: m["value"] for m in next(r for r in report if r["value_or_threshold"] == value)["metrics"]
    }


def test_continuous_facet_pre_training() -> None:
    assert _values(pre_training_facet_report(DF_CONT, "x_band", "y", [1], "z"), "(2, 4]") == {
        "CDDL": approx(0.3851010101010101),
        "CI": approx(-0.08333333333333333),
        "DPL": approx(0.1048951048951049),
        "JS": approx(0.01252420207928287),
        "KL": approx(0.057704603668062765),
        "KS": approx(0.1048951048951049),
        "LP": approx(0.14834407996920576),
        "TVD": approx(0.1048951048951049),
    }


def test_continuous_facet_post_training() -> None:
    assert _values(post_training_facet_report(DF_CONT, "x_band", "y", "yhat", [1], "z"), "(2, 4]") == {
        "AD": approx(-0.2167832167832168),
        "CDDPL": approx(0.07592592592592595),
        "DAR": approx(-0.1),
        "DCA": approx(0.15),
        "DCR": approx(1.0),
        "DI": approx(1.0576923076923077),
        "DPPL": approx(-0.04195804195804198),
        "DRR": approx(0.6666666666666667),
        "GE": approx(0.07593688362919139),
        "RD": approx(-1.0),
        "SD": approx(0.1388888888888889),
        "TE": approx(-0.25),
    }


def test_label_values_pre_training() -> None:
    report = pre_training_facet_report(DF_LABELS, "x", "y", ["p", "q"], "z", metrics=["DPL", "CDDL"])
    assert {value: _values(report, value) for value in "abc"} == {
        "a": {"CDDL": approx(-0.3), "DPL": approx(-0.25)},
        "b": {"CDDL": approx(0.3), "DPL": approx(0.5)},
        "c": {"CDDL": approx(-0.4), "DPL": approx(-1 / 3)},
    }


def test_label_values_post_training() -> None:
    report = post_training_facet_report(
        DF_LABELS, "x", "y", "yhat", ["p", "q"], "z", metrics=["AD", "DI", "DPPL", "RD", "DAR", "DRR"]
    )
    assert _values(report, "a") == {
        "AD": approx(-0.25),
        "DAR": approx(-0.25),
        "DI": approx(1.0),
        "DPPL": approx(0.0),
        "DRR": approx(0),
        "RD": approx(0.0),
    }
    assert _values(report, "b") == {
        "AD": approx(0.5),
        "DAR": approx(0.5),
        "DI": approx(1.0),
        "DPPL": approx(0.0),
        "DRR": approx(0),
        "RD": approx(0.0),
    }
    assert _values(report, "c") == {
        "AD": approx(-1 / 3),
        "DAR": approx(-1 / 3),
        "DI": approx(1.0),
        "DPPL": approx(0.0),
        "DRR": approx(0),
        "RD": approx(0.0),
    }
