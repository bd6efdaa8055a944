"""Matplotlib figures as PNG bytes (files only, never a window)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """Lay out, render and close `fig`; its PNG bytes."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
