"""SHAP explanations: planted sentiment words surface, attributions add up, the page is self-contained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from reviewpipe.errors import ReviewpipeError
from reviewpipe.evaluation.explain import (
    attribute_to_words,
    explain_baseline_reviews,
    global_importance,
    linear_explainer,
    partition_explanations,
    render_html,
    token_importance,
)
from reviewpipe.models.baseline import predict_proba, save_model, train_baseline
from tests.conftest import make_prepared_frame
from tests.helpers.bert import save_tiny_checkpoint
from tests.helpers.params import TINY_BASELINE, baseline_settings, real_params

CFG = baseline_settings(*TINY_BASELINE)


@pytest.fixture(scope="module")
def trained() -> tuple:
    train = make_prepared_frame(300, seed=1)
    model = train_baseline(train, CFG)
    return model, linear_explainer(model, train["review_body"].tolist()[:100])


def test_global_importance_ranks_the_planted_word_for_positive(trained: tuple) -> None:
    model, explainer = trained
    texts = make_prepared_frame(60, seed=2)["review_body"].tolist()
    top = global_importance(explainer, model, texts, top_k=5, analyzer="word")
    positive = {t["feature"]: t for t in top["positive"]}
    assert "superb" in positive, list(positive)
    assert positive["superb"]["mean_shap_present"] > 0 and positive["superb"]["reviews"] > 0
    assert all(t["kind"] == "word" for t in top["negative"])
    chars = global_importance(explainer, model, texts, top_k=3, analyzer="char")
    assert all(t["kind"] == "char" for t in chars["neutral"])


def test_word_attributions_add_up_to_the_margin(trained: tuple) -> None:
    model, explainer = trained
    text = "Superb dress, ordered the size I wear.  Superb!"
    values = np.asarray(explainer.shap_values(model.named_steps["features"].transform([text])))[0]
    margin = model.named_steps["classifier"].decision_function(
        model.named_steps["features"].transform([text])
    )[0]
    np.testing.assert_allclose(values.sum(axis=0), margin - explainer.expected_value, atol=1e-4)
    per_word, other = attribute_to_words(model, text, values[:, 2])
    assert len(per_word) == 8  # whitespace-separated words
    assert per_word.sum() + other == pytest.approx(values[:, 2].sum(), abs=1e-6)
    assert int(np.argmax(per_word)) in (0, 7)  # one of the two "superb"s pushes hardest towards positive
    assert per_word[0] == pytest.approx(per_word[7], rel=0.35)


def test_review_explanation_highlights_the_planted_word(trained: tuple) -> None:
    model, explainer = trained
    texts = ["superb dress ordered the size", "awful cheap top"]
    (first, second) = explain_baseline_reviews(explainer, model, texts, observed=["positive", "negative"])
    assert first.explained_class == "positive" and second.explained_class == "negative"
    assert "".join(t for t, _ in first.pieces) == texts[0]
    assert max(first.pieces, key=lambda p: p[1])[0].strip() == "superb"
    assert first.top_features[0][0] in ("word:superb", "char: su", "char:sup", "char:superb")
    assert first.probabilities["positive"] == pytest.approx(predict_proba(model, texts)[0, 2])
    assert first.unit == "log-odds"


@pytest.mark.slow  # shap's Partition explainer JIT-compiles (numba) on first use: ~30 s on a busy CPU
def test_partition_explainer_with_a_text_masker_finds_the_planted_word(trained: tuple) -> None:
    from transformers import AutoTokenizer

    from reviewpipe.hf import PACKAGED_MINILM, resolve_checkpoint

    model, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(PACKAGED_MINILM))
    texts = ["the dress is superb and I ordered my size", "this top was cheap and awful"]
    reviews, raw = partition_explanations(lambda t: predict_proba(model, t), tokenizer, texts, max_evals=60)
    assert reviews[0].explained_class == "positive"
    assert max(reviews[0].pieces, key=lambda p: p[1])[0].strip() == "superb"
    # Efficiency: base value + contributions = the explained probability.
    for r, text in zip(reviews, texts, strict=True):
        c = ["negative", "neutral", "positive"].index(r.explained_class)
        total = r.base_value + sum(v for _, v in r.pieces)
        assert total == pytest.approx(predict_proba(model, [text])[0, c], abs=1e-3)
    assert raw.values[0].shape[1] == 3


def test_token_importance_averages_over_reviews_so_rare_tokens_do_not_dominate() -> None:
    from types import SimpleNamespace

    def row(*values: float) -> list[float]:  # a token's SHAP value for the positive class only
        return [[0.0, 0.0, v] for v in values]

    explanation = SimpleNamespace(
        data=[["", "Great ", "fit"], ["great", " zz"], ["fine", ""]],
        values=[np.array(row(0.5, 0.1, 0.02)), np.array(row(-0.1, 0.15)), np.array(row(0.01, 0.5))],
    )
    top = token_importance(explanation, top_k=3)["positive"]
    assert [t["feature"] for t in top] == ["great", "zz", "fit"]  # "" ([CLS]/[SEP]) is skipped
    assert top[0]["mean_abs_shap"] == pytest.approx(0.2 / 3) and top[0]["occurrences"] == 2
    assert top[0]["mean_shap_present"] == pytest.approx(0.0)
    assert top[1]["mean_abs_shap"] == pytest.approx(0.15 / 3)


def test_page_is_self_contained_and_escapes_review_text(trained: tuple) -> None:
    model, explainer = trained
    reviews = explain_baseline_reviews(explainer, model, ["<b>superb</b> & cheap"], observed=["positive"])
    page = render_html(
        [
            {
                "model": "baseline",
                "method": "LinearExplainer",
                "unit": "log-odds",
                "plot": "baseline/importance.png",
                "reviews": reviews,
            }
        ]
    )
    assert "&lt;b&gt;superb&lt;/b&gt;" in page and "<b>superb</b>" not in page
    assert "<script" not in page and "http" not in page
    assert page.count("<span style=") == len(reviews[0].pieces)


def _explain_params(models: list[str]) -> DictConfig:
    return real_params(
        f"explain.models=[{','.join(models)}]",
        "explain.top_k=5",
        "explain.background_rows=50",
        "explain.global_rows=30",
        "explain.reviews=2",
        "explain.bert_sample=3",
        "explain.max_evals=30",
        "explain.batch_size=16",
        "explain.seed=1",
    )


def test_stage_explains_the_baseline(prepared_splits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reviewpipe.stages.explain import main

    monkeypatch.chdir(prepared_splits)
    save_model(train_baseline(make_prepared_frame(300, seed=0), CFG), "models/baseline/model.joblib")
    main(_explain_params(["baseline"]))  # bert absent by config: not needed on disk
    page = Path("reports/explain/index.html").read_text()
    assert "LinearExplainer" in page and page.count("class='review'") == 2
    importance = json.loads(Path("reports/explain/baseline/importance.json").read_text())
    assert (
        importance["rows"] == 30 and len(importance["top"]["positive"]) == 5 and "char_ngrams" in importance
    )
    assert Path("reports/explain/baseline/importance.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads(Path("reports/explain/baseline/reviews.json").read_text())) == 2


@pytest.mark.slow  # Partition explainer (numba JIT) over a tiny random BERT
def test_stage_explains_baseline_and_bert_into_one_page(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewpipe.stages.explain import main

    monkeypatch.chdir(prepared_splits)
    save_model(train_baseline(make_prepared_frame(300, seed=0), CFG), "models/baseline/model.joblib")
    save_tiny_checkpoint(prepared_splits / "models" / "bert")
    main(_explain_params(["baseline", "bert"]))
    page = Path("reports/explain/index.html").read_text()
    assert "LinearExplainer" in page and "Partition explainer" in page
    assert page.count("class='review'") == 4  # 2 shown per model
    bert_reviews = json.loads(Path("reports/explain/bert/reviews.json").read_text())
    assert len(bert_reviews) == 3 and bert_reviews[0]["unit"] == "probability"
    for r in bert_reviews:  # tokens cover the review text
        assert "".join(t for t, _ in r["pieces"]).replace(" ", "") in r["text"].replace(" ", "")
    assert Path("reports/explain/bert/importance.png").read_bytes()[:4] == b"\x89PNG"


def test_stage_refuses_models_it_cannot_explain_or_find(
    prepared_splits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewpipe.stages.explain import main

    monkeypatch.chdir(prepared_splits)
    with pytest.raises(ReviewpipeError, match=r"explain.models.0: Input should be 'baseline' or 'bert'"):
        main(real_params("explain.models=[automl]"))
    with pytest.raises(ReviewpipeError, match="dvc repro bert"):
        main(real_params("explain.models=[bert]"))
