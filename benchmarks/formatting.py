"""Number and Markdown-table formatting shared by the results page, the scale page and the device check."""

from __future__ import annotations

import numpy as np
import pandas as pd


def fmt(x, nd=3):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.{nd}f}"
    return str(x)


def md_table(df: pd.DataFrame, cols: list, names: list | None = None, nd: dict | None = None) -> str:
    names = names or cols
    nd = nd or {}
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt(r.get(c), nd.get(c, 3)) for c in cols) + " |")
    return "\n".join(lines)
