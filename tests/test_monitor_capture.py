"""Captured traffic in SageMaker's data-capture format (files these tests write, local and on moto's
S3) and the model-quality statistics: macro-F1 against scikit-learn, intervals, windows, thresholds,
the A/B comparison, ground-truth sources and their precedence."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from reviewpipe.errors import ReviewpipeError
from reviewpipe.monitoring import quality
from reviewpipe.monitoring.capture import read_capture


def record(
    body: str,
    response: str,
    *,
    when: str,
    event_id: str,
    inference_id: str | None = None,
    content_type: str = "application/json",
    accept: str = "application/json",
    encoding: str = "JSON",
) -> dict:
    """One capture record as SageMaker writes it (data is the payload text, or base64 for BASE64)."""

    def encode(text: str) -> str:
        return base64.b64encode(text.encode()).decode() if encoding == "BASE64" else text

    meta = {"eventId": event_id, "inferenceTime": when}
    if inference_id is not None:
        meta["inferenceId"] = inference_id
    return {
        "captureData": {
            "endpointInput": {
                "observedContentType": content_type,
                "mode": "INPUT",
                "data": encode(body),
                "encoding": encoding,
            },
            "endpointOutput": {
                "observedContentType": accept,
                "mode": "OUTPUT",
                "data": encode(response),
                "encoding": encoding,
            },
        },
        "eventMetadata": meta,
        "eventVersion": "0",
    }


def prediction(probabilities: list[float], version: str = "m-v1") -> dict:
    return {
        "label": [-1, 0, 1][int(np.argmax(probabilities))],
        "probabilities": dict(zip(["-1", "0", "1"], probabilities, strict=True)),
        "model_version": version,
    }


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_read_capture_every_encoding_and_layout(tmp_path: Path) -> None:
    root = tmp_path / "capture"
    hour = root / "shop-endpoint" / "champion" / "2026" / "11" / "02" / "13"
    single = record(
        json.dumps({"inputs": "Lovely dress"}),
        json.dumps({"predictions": [prediction([0.1, 0.2, 0.7])], "model_version": "m-v1"}),
        when="2026-11-02T13:05:00Z",
        event_id="e1",
        inference_id="101",
    )
    pair = record(  # JSON Lines, base64 (SageMaker's default encoding), no inferenceId: eventId#i keys
        '{"inputs": "Too small"}\n{"inputs": ["Itchy", "Fine"]}\n',
        "".join(
            json.dumps(prediction(p)) + "\n" for p in ([0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3])
        ),
        when="2026-11-02T13:06:00Z",
        event_id="e2",
        content_type="application/jsonlines",
        accept="application/jsonlines",
        encoding="BASE64",
    )
    csv_in = record(
        '"Runs, large"\nGreat\n',
        json.dumps({"predictions": [prediction([0.3, 0.4, 0.3]), prediction([0.0, 0.1, 0.9])]}),
        when="2026-11-02T13:07:00+00:00",
        event_id="e3",
        inference_id="batch-7",
        content_type="text/csv",
        encoding="CSV",
    )
    input_only = single | {"captureData": {"endpointInput": single["captureData"]["endpointInput"]}}
    mismatch = record(
        json.dumps({"inputs": ["a", "b"]}),
        json.dumps({"predictions": [prediction([0.1, 0.1, 0.8])]}),
        when="2026-11-02T13:08:00Z",
        event_id="e5",
    )
    write_lines(
        hour / "a.jsonl",
        [json.dumps(r) for r in (single, pair, csv_in, input_only, mismatch)] + ['{"captureData": {"endpo'],
    )
    other = root / "shop-endpoint" / "challenger" / "2026" / "11" / "02" / "14" / "b.jsonl"
    write_lines(
        other,
        [
            json.dumps(
                record(
                    json.dumps({"inputs": "Meh"}),
                    json.dumps({"predictions": [prediction([0.2, 0.6, 0.2], "b-v2")]}),
                    when="2026-11-02T14:00:00Z",
                    event_id="e6",
                    inference_id="102",
                )
            )
        ],
    )

    capture = read_capture(str(root))
    frame = capture.frame
    assert frame["key"].tolist() == ["101", "e2#0", "e2#1", "e2#2", "batch-7#0", "batch-7#1", "102"]
    assert frame["text"].tolist() == [
        "Lovely dress",
        "Too small",
        "Itchy",
        "Fine",
        "Runs, large",
        "Great",
        "Meh",
    ]
    assert frame["predicted_label"].tolist() == [1, -1, -1, 0, 0, 1, 0]
    assert frame["variant"].tolist() == ["champion"] * 6 + ["challenger"]
    assert set(frame["endpoint"]) == {"shop-endpoint"}
    assert frame.loc[0, ["p_-1", "p_0", "p_1", "confidence"]].tolist() == [0.1, 0.2, 0.7, 0.7]
    assert frame.loc[6, "model_version"] == "b-v2" and frame.loc[1, "inference_id"] is None
    assert frame["inference_time"].iloc[0] == pd.Timestamp("2026-11-02T13:05:00Z")
    summary = capture.summary()
    assert summary["files"] == 2 and summary["records"] == 7 and summary["predictions"] == 7
    assert summary["rejected"] == {
        "no endpointOutput (capture mode Input only): nothing was answered to monitor": 1,
        "2 reviews in the request but 1 predictions": 1,
        "not a JSON line (torn write?)": 1,
    }
    assert summary["rejected_examples"]["not a JSON line (torn write?)"] == [f"{hour / 'a.jsonl'}:6"]
    assert summary["variants"] == {"challenger": 1, "champion": 6}
    # Pointing at a variant's folder works too; a file outside the layout is a clear error.
    assert read_capture(str(root / "shop-endpoint" / "challenger")).frame["key"].tolist() == ["102"]
    write_lines(root / "stray.jsonl", ["{}"])
    with pytest.raises(ReviewpipeError, match=r"yyyy/mm/dd/hh"):
        read_capture(str(root))
    with pytest.raises(ReviewpipeError, match="no captured data"):
        read_capture(str(tmp_path / "nothing"))


def test_read_capture_from_s3(moto_server: str, s3_bucket: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_server})
    line = record(
        json.dumps({"inputs": "Nice"}),
        json.dumps({"predictions": [prediction([0.1, 0.1, 0.8])]}),
        when="2026-11-02T10:00:00Z",
        event_id="e",
        inference_id="7",
    )
    with fs.open(f"{s3_bucket}/capture/ep/AllTraffic/2026/11/02/10/x.jsonl", "w") as f:
        f.write(json.dumps(line) + "\n")
    frame = read_capture(f"s3://{s3_bucket}/capture").frame
    assert frame[["key", "variant", "endpoint", "predicted_label"]].values.tolist() == [
        ["7", "AllTraffic", "ep", 1]
    ]


SETTINGS = quality.QualitySettings(
    window="1D",
    max_drop=0.05,
    min_rows=20,
    comparison_method="robust",
    confidence=0.95,
    bootstrap_resamples=1000,
    seed=0,
)


def test_macro_f1_and_accuracy_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for n in (3, 40, 700):
        t = rng.choice([-1, 0, 1], n, p=[0.1, 0.2, 0.7])
        p = np.where(rng.random(n) < 0.7, t, rng.choice([-1, 0, 1], n))
        c = quality.codes(t, p)
        assert float(quality.macro_f1_of(c)) == pytest.approx(f1_score(t, p, average="macro"))
        assert float(quality.accuracy_of(c)) == pytest.approx((t == p).mean())
    # vectorised over resamples, as the bootstrap calls it
    c = quality.codes(rng.choice([-1, 0, 1], (5, 50)).ravel(), rng.choice([-1, 0, 1], 250)).reshape(5, 50)
    expected = [f1_score(row // 3, row % 3, average="macro") for row in c]
    assert np.allclose(quality.macro_f1_of(c, axis=-1), expected)


def test_quality_metrics_intervals() -> None:
    t = np.array([1] * 80 + [0] * 10 + [-1] * 10)
    p = t.copy()
    p[:20] = 0  # 20 of 100 wrong
    metrics = quality.quality_metrics(quality.codes(t, p), SETTINGS)
    assert metrics["n"] == 100 and metrics["accuracy"]["value"] == 0.8
    # Wilson interval for 80/100 at 95%: 0.7112 .. 0.8666
    z = 1.959964
    centre = (0.8 + z * z / 200) / (1 + z * z / 100)
    half = z * np.sqrt(0.8 * 0.2 / 100 + z * z / 40000) / (1 + z * z / 100)
    assert metrics["accuracy"]["interval"] == pytest.approx([centre - half, centre + half], abs=1e-5)
    low, high = metrics["macro_f1"]["interval"]
    assert low < metrics["macro_f1"]["value"] < high
    assert metrics["macro_f1"]["value"] == pytest.approx(f1_score(t, p, average="macro"), abs=1e-6)
    assert metrics["confusion_matrix"]["1"] == {"-1": 0, "0": 20, "1": 60}
    again = quality.quality_metrics(quality.codes(t, p), SETTINGS)
    assert again == metrics  # seeded bootstrap


def test_thresholds_judge_robust_and_simple() -> None:
    baseline = {"accuracy": {"value": 0.85}, "macro_f1": {"value": 0.70}}
    floors = quality.thresholds(baseline, SETTINGS)
    assert floors == {"accuracy": 0.8, "macro_f1": 0.65}
    t = np.array([1, 0, -1] * 10)
    p = t.copy()
    p[:8] = [0, 1, 1, 0, 1, 1, 0, 1]  # 22/30 correct: 0.733, below 0.8 but its interval reaches above
    metrics = quality.quality_metrics(quality.codes(t, p), SETTINGS)
    robust = {c["metric"]: c for c in quality.judge(metrics, floors, SETTINGS)}
    assert robust["accuracy"]["value"] < 0.8 < robust["accuracy"]["interval"][1]
    assert not robust["accuracy"]["violated"]
    simple = quality.QualitySettings(**{**SETTINGS.__dict__, "comparison_method": "simple"})
    assert {c["metric"]: c["violated"] for c in quality.judge(metrics, floors, simple)}["accuracy"]
    few = quality.QualitySettings(**{**SETTINGS.__dict__, "comparison_method": "simple", "min_rows": 31})
    checks = quality.judge(metrics, floors, few)
    assert all(not c["judged"] and not c["violated"] for c in checks)  # too few rows to judge
    assert quality.judge(metrics, None, SETTINGS) == []  # no baseline, no thresholds


def captured(variant: str, truth: np.ndarray, predicted: np.ndarray, start: str, prefix: str) -> pd.DataFrame:
    times = pd.date_range(start, periods=len(truth), freq="min", tz="UTC")
    return pd.DataFrame(
        {
            "key": [f"{prefix}{i}" for i in range(len(truth))],
            "variant": variant,
            "inference_time": times,
            "predicted_label": predicted,
            "truth": truth,
        }
    )


def test_model_quality_windows_violations_and_ab() -> None:
    rng = np.random.default_rng(1)
    truth = rng.choice([-1, 0, 1], 600, p=[0.1, 0.15, 0.75])

    def noisy(t: np.ndarray, error: float) -> np.ndarray:
        wrong = rng.random(len(t)) < error
        return np.where(wrong, (t + 2) % 3 - 1, t)

    champion_day1 = captured("champion", truth[:200], noisy(truth[:200], 0.1), "2026-11-01", "a")
    champion_day2 = captured("champion", truth[200:400], noisy(truth[200:400], 0.45), "2026-11-02", "b")
    challenger = captured("challenger", truth[400:], noisy(truth[400:], 0.1), "2026-11-01T06:00", "c")
    frame = pd.concat([champion_day1, champion_day2, challenger], ignore_index=True)
    truth_frame = quality.combine_ground_truth(
        [("human", frame.rename(columns={"truth": "label"})[["key", "label"]])]
    )
    baseline = {"accuracy": {"value": 0.9}, "macro_f1": {"value": 0.85}}
    report = quality.model_quality(frame.drop(columns="truth"), truth_frame, baseline, SETTINGS, "champion")
    assert report["ground_truth"]["joined_predictions"] == 600
    windows = report["variants"]["champion"]["windows"]
    assert [w["start"][:10] for w in windows] == ["2026-11-01", "2026-11-02"] and [
        w["n"] for w in windows
    ] == [200, 200]
    assert windows[1]["accuracy"]["value"] == pytest.approx(
        (champion_day2["predicted_label"] == champion_day2["truth"]).mean(), abs=1e-6
    )
    violated = {(v["variant"], v["window"][:10], v["metric"]) for v in report["violations"]}
    assert violated == {("champion", "2026-11-02", "accuracy"), ("champion", "2026-11-02", "macro_f1")}
    comparison = report["ab"]["comparisons"]["challenger"]
    assert (
        report["ab"]["reference"] == "champion"
        and comparison["n"] == 200
        and comparison["reference_n"] == 400
    )
    acc = comparison["accuracy_difference"]
    expected = (challenger["predicted_label"] == challenger["truth"]).mean() - (
        pd.concat([champion_day1, champion_day2]).pipe(lambda d: d["predicted_label"] == d["truth"]).mean()
    )
    assert acc["value"] == pytest.approx(expected, abs=1e-6) and acc["interval"][0] > 0
    assert comparison["verdict"].startswith("better") and comparison["accuracy_fisher_p_value"] < 0.01
    # Two variants of the same quality: no significant difference.
    same = captured("challenger", truth[:200], noisy(truth[:200], 0.1), "2026-11-01", "d")
    equal = quality.model_quality(
        pd.concat([champion_day1, same]).drop(columns="truth"),
        quality.combine_ground_truth(
            [("human", pd.concat([champion_day1, same]).rename(columns={"truth": "label"})[["key", "label"]])]
        ),
        baseline,
        SETTINGS,
        "champion",
    )
    assert equal["ab"]["comparisons"]["challenger"]["verdict"].startswith("no significant")


def test_ground_truth_sources_and_precedence(tmp_path: Path) -> None:
    gt = tmp_path / "gt" / "2026" / "11" / "02" / "10" / "labels.jsonl"
    gt.parent.mkdir(parents=True)
    gt.write_text(
        "".join(
            json.dumps(
                {
                    "groundTruthData": {"data": str(label), "encoding": "CSV"},
                    "eventMetadata": {"eventId": key},
                    "eventVersion": "0",
                }
            )
            + "\n"
            for key, label in (("1", -1), ("2", 0))
        )
    )
    records = quality.ground_truth_records(str(tmp_path / "gt"))
    assert records.values.tolist() == [["1", -1], ["2", 0]]
    human = pd.DataFrame({"key": ["2", "3"], "label": [1, 1]})
    ratings = pd.DataFrame({"key": ["3", "4"], "label": [0, 0]})
    combined = quality.combine_ground_truth([("file", records), ("human", human), ("ratings", ratings)])
    assert combined.sort_values("key").values.tolist() == [
        ["1", -1, "file"],
        ["2", 0, "file"],
        ["3", 1, "human"],
        ["4", 0, "ratings"],
    ]
    gt.write_text('{"groundTruthData": {"data": "5"}, "eventMetadata": {"eventId": "x"}}\n')
    with pytest.raises(ReviewpipeError, match="label 5"):
        quality.ground_truth_records(str(gt))
    gt.write_text('{"eventMetadata": {"eventId": "x"}}\n')
    with pytest.raises(ReviewpipeError, match="labels.jsonl:1: not a ground-truth record"):
        quality.ground_truth_records(str(gt))


def test_reads_what_the_real_server_captures(tmp_path: Path) -> None:
    """`reviewpipe serve`'s capture writer (serving/capture.py) and this reader agree: every request
    shape the server takes comes back as one row per review, keyed by the client's inference id."""
    from reviewpipe.serving.server import ModelServer, ServeSettings, VariantSpec
    from tests.test_deploy_sagemaker import baseline_packages
    from tests.test_serve import invoke

    packages = baseline_packages(tmp_path / "pkg", ("champion", "challenger"))
    settings = ServeSettings.from_mapping(
        {
            "port": 0,
            "capture": {"enabled": True, "destination": str(tmp_path / "capture"), "endpoint_name": "ep"},
        }
    )
    server = ModelServer([VariantSpec(n, str(p)) for n, p in packages.items()], settings).start(
        wait=True, timeout=60
    )
    answers = {}
    try:
        for key, variant, payload, content_type in (
            ("r1", "champion", {"inputs": "love it"}, "application/json"),
            ("r2", "challenger", {"inputs": "hate it"}, "application/json"),
            ("batch", "champion", {"inputs": ["it is ok", "love it"]}, "application/json"),
            ("lines", "challenger", b'{"inputs": "hate it"}\n{"inputs": "ok"}\n', "application/jsonlines"),
        ):
            status, _, body = invoke(
                server.url,
                payload,
                content_type=content_type,
                X_Amzn_SageMaker_Target_Variant=variant,
                X_Amzn_SageMaker_Inference_Id=key,
            )
            assert status == 200
            answers[key] = (variant, body)
        assert invoke(server.url, {"inputs": "no id"}, X_Amzn_SageMaker_Target_Variant="champion")[0] == 200
    finally:
        server.stop(drain_timeout=5)  # flushes the capture buffer
    frame = read_capture(str(tmp_path / "capture")).frame.set_index("key")
    assert len(frame) == 7 and set(frame["endpoint"]) == {"ep"}
    assert frame.loc["r1", "variant"] == "champion" and frame.loc["r2", "variant"] == "challenger"
    assert frame.loc["batch#0", "text"] == "it is ok" and frame.loc["lines#1", "text"] == "ok"
    served = answers["r1"][1]["predictions"][0]
    assert frame.loc["r1", ["p_-1", "p_0", "p_1"]].tolist() == [
        served["probabilities"][k] for k in ("-1", "0", "1")
    ]
    assert frame.loc["r1", "model_version"] == "champion-v1"
    no_id = frame[frame["inference_id"].isna()]
    assert len(no_id) == 1 and no_id.index[0] == no_id["event_id"].iloc[0]  # SageMaker's rule: the eventId
