"""Human-labelled rows: evaluate reports on them apart from the headline figures.

Test rows keep their rating-derived labels for the headline metrics (prepare never relabels them);
where a person labelled a test row, `human_label` holds it. The evaluation set of `mix: human` is
those rows with the human label as the truth, so each model is also measured against people, and
`rating_agreement` says how often the star rating's label agreed with them on the same rows.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from reviewpipe import SENTIMENTS

HUMAN_LABEL = "human_label"
RATING_LABEL = "rating_sentiment"


def human_rows(unbalanced: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of `split` (before balancing) that carry a human label, the human label as their
    truth (`sentiment`, `label_id`); empty when none (or when prepare predates human_label)."""
    if HUMAN_LABEL not in unbalanced.columns:
        return unbalanced.iloc[0:0]
    rows = unbalanced[(unbalanced["split_type"] == split) & unbalanced[HUMAN_LABEL].notna()]
    human = rows[HUMAN_LABEL].astype("int64")
    return rows.assign(
        sentiment=human, label_id=human.map({s: i for i, s in enumerate(SENTIMENTS)})
    ).reset_index(drop=True)


def rating_agreement(rows: pd.DataFrame) -> dict[str, Any]:
    """How often the rating-derived label equals the human label on these rows."""
    agree = int((rows[RATING_LABEL].astype("int64") == rows[HUMAN_LABEL].astype("int64")).sum())
    return {"rows": len(rows), "agree": agree, "share": round(agree / len(rows), 6) if len(rows) else None}
