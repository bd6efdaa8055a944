"""The SageMaker training entry point (`sagemaker_program`) of bert.launcher=sagemaker.

It runs the bert stage's own code (reviewpipe.stages.bert.main, launcher local) inside a PyTorch /
Hugging Face Deep Learning Container, reading the training-container contract:

  SM_HPS               the hyperparameters: `bert.<key>` = params.bert, `features.<key>` = the feature
                       group's settings (values JSON-decoded by the sagemaker-training toolkit)
  SM_CHANNEL_FEATURES  the feature store (the group folder inside), downloaded from S3
  SM_CHANNEL_PREPARED  prepare's class_weights.json (when bert.class_weights is true)
  SM_MODEL_DIR         the save_pretrained directory -> model.tar.gz (plus dvclive/ for the metrics)
  SM_HOSTS, SM_CURRENT_HOST, SM_NUM_GPUS   Lightning's devices / num_nodes / strategy (DDP across
                       instances under torch_distributed, which launches this script with torchrun)
  <base>/checkpoints   /opt/ml/checkpoints, synced with the job's CheckpointConfig S3 URI: last.ckpt
                       and run.json there make a restarted (spot-interrupted) job resume

`<base>` is SAGEMAKER_BASE_DIR when set (the toolkit's own override, used in tests) else /opt/ml.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

CHANNEL_FEATURES = "features"
CHANNEL_PREPARED = "prepared"
CLASS_WEIGHTS_FILE = "class_weights.json"
LIVE_SUBDIR = "dvclive"  # inside SM_MODEL_DIR: the DVCLive history comes back with the model


def base_dir(env: Mapping[str, str]) -> str:
    return env.get("SAGEMAKER_BASE_DIR") or "/opt/ml"


def sections(hyperparameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`bert.<key>` / `features.<key>` hyperparameters back into params sections."""
    out: dict[str, dict[str, Any]] = {"bert": {}, "features": {}}
    for name, value in hyperparameters.items():
        head, _, key = name.partition(".")
        if head in out and key:
            out[head][key] = value
    return out


def distributed(env: Mapping[str, str]) -> dict[str, Any]:
    """Lightning's devices / num_nodes / strategy for this cluster: every GPU of every host."""
    hosts = json.loads(env["SM_HOSTS"])
    gpus = int(env["SM_NUM_GPUS"])
    workers = max(gpus, 1) * len(hosts)
    return {
        "accelerator": "gpu" if gpus else "cpu",
        "devices": max(gpus, 1),
        "num_nodes": len(hosts),
        "strategy": "ddp" if workers > 1 else "auto",
    }


def job_params(env: Mapping[str, str]) -> dict[str, Any]:
    """The params the bert stage runs with inside the container."""
    parts = sections(json.loads(env["SM_HPS"]))
    model_dir = env["SM_MODEL_DIR"]
    bert = {
        **parts["bert"],
        **distributed(env),
        "launcher": "local",
        "sagemaker": None,  # the job's own settings stay with the launcher
        "out_dir": model_dir,
        "ckpt_dir": os.path.join(base_dir(env), "checkpoints"),
        "live_dir": os.path.join(model_dir, LIVE_SUBDIR),
        "class_weights_uri": os.path.join(
            env.get(f"SM_CHANNEL_{CHANNEL_PREPARED.upper()}", ""), CLASS_WEIGHTS_FILE
        ),
        "enable_progress_bar": False,  # CloudWatch gets plain progress lines
    }
    features = {**parts["features"], "store_uri": env[f"SM_CHANNEL_{CHANNEL_FEATURES.upper()}"]}
    return {"bert": bert, "features": features, "storage": {}}


def main() -> None:
    from omegaconf import OmegaConf

    import reviewpipe
    from reviewpipe.stages import bert

    params = job_params(os.environ)
    print(
        f"train_entry: host {os.environ['SM_CURRENT_HOST']} of {os.environ['SM_HOSTS']}, "
        f"{os.environ['SM_NUM_GPUS']} GPU(s); {json.dumps(distributed(os.environ))}; "
        f"reviewpipe from {os.path.dirname(reviewpipe.__file__)}",
        flush=True,
    )
    bert.main(OmegaConf.create(params))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the unpacked source dir
    main()
