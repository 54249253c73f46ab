"""The tool table: every tool the suite can run, its runner, what it is scored as and its options.

A leaf module (no import of the harness, the report or the scale run), read by
all three: :data:`TOOLS` (in the order the page lists the tools), which tools
apply to which kind of task, the modules a tool's zygote preloads, and the
display labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Tool:
    name: str
    group: str  # "pybridge" or "peer"
    runner: str  # "py", "r" or "scvi"
    annotation: bool  # scored as an annotator on transfer tasks
    clusters: str  # "" | "transfer" (clusters of the query of a transfer task) | "sets" | "both"
    full: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)
    needs_k: bool = False  # given the true number of types of the data it clusters
    label: str = ""
    in_default_run: bool = True  # False: runs only when named in --tools

    @property
    def display(self) -> str:
        return self.label or self.name


TOOLS = {
    t.name: t
    for t in [
        Tool(
            "pybridge_scnym",
            "pybridge",
            "py",
            True,
            "",
            full={"reject": True},
            quick={"reject": True, "n_epochs": 3, "min_epochs": 1},
            label="pybridge scNym",
        ),
        # the setting suggested for a query that holds only the reference's types: the paper's main configuration
        # (no discovery mode) on the genes among the reference's and the query's 2000 most dispersed
        Tool(
            "pybridge_scnym_top2000",
            "pybridge",
            "py",
            True,
            "",
            full={"reject": True, "discovery": False, "n_top_genes": 2000},
            quick={"reject": True, "discovery": False, "n_top_genes": 2000, "n_epochs": 3, "min_epochs": 1},
            label="pybridge scNym (discovery=False, n_top_genes=2000)",
        ),
        Tool(
            "pybridge_jind",
            "pybridge",
            "py",
            True,
            "",
            quick={"n_epochs": 2, "gan_epochs": 1, "gan_min_steps": 1},
            label="pybridge JIND",
        ),
        # the linear baseline (scikit-learn's objective; the peer "logreg" is scikit-learn itself)
        Tool("pybridge_linear", "pybridge", "py", True, "", label="pybridge linear"),
        Tool(
            "pybridge_itclust",
            "pybridge",
            "py",
            True,
            "transfer",
            quick={"layerwise_epochs": 3, "pretrain_epochs": 6, "source_epochs": 3, "maxiter": 2},
            label="pybridge ItClust",
        ),
        Tool(
            "pybridge_nmf_transfer",
            "pybridge",
            "py",
            False,
            "transfer",
            quick={"thetas": [0.5], "kmeans_n_init": 2},
            needs_k=True,
            label="pybridge NMF transfer",
        ),
        Tool(
            "pybridge_cicl", "pybridge", "py", False, "sets", quick={"n_epochs": 2}, needs_k=True, label="pybridge CICL"
        ),
        Tool("logreg", "peer", "py", True, "", label="logistic regression"),
        Tool("seurat", "peer", "r", True, "", label="Seurat transfer"),
        Tool("singler", "peer", "r", True, "", label="SingleR"),
        Tool("celltypist", "peer", "py", True, "", label="CellTypist"),
        Tool("scanvi", "peer", "scvi", True, "", quick={"scvi_epochs": 2, "scanvi_epochs": 1}, label="scANVI"),
        # scvi-tools' own epoch heuristics (400 scVI epochs below 20k cells, then at most 10 scANVI epochs): the
        # setting a user who calls .train() gets; ~6x the capped run's time, so only on request (--tools)
        Tool(
            "scanvi_default",
            "peer",
            "scvi",
            True,
            "",
            full={"scvi_epochs": "default", "scanvi_epochs": "default"},
            quick={"scvi_epochs": 2, "scanvi_epochs": 1},
            label="scANVI (default epochs)",
            in_default_run=False,
        ),
        Tool("pca_leiden", "peer", "py", False, "both", needs_k=True, label="PCA+Leiden (K-matched)"),
        Tool("pca_kmeans", "peer", "py", False, "both", needs_k=True, label="PCA+KMeans"),
    ]
}

#: benchmark tool -> pybridge method in :mod:`pybridge.models._registry` (a variant such as
#: ``pybridge_scnym_top2000`` differs only in the options its :class:`Tool` gives it)
PYBRIDGE_METHODS = {
    "pybridge_scnym": "scnym",
    "pybridge_scnym_top2000": "scnym",
    "pybridge_jind": "jind",
    "pybridge_linear": "linear",
    "pybridge_itclust": "itclust",
    "pybridge_nmf_transfer": "nmf_transfer",
    "pybridge_cicl": "cicl",
}

#: tools that cluster the query of a transfer task alone (the worker does not read the reference for them)
QUERY_ONLY = ("pybridge_cicl", "pca_leiden", "pca_kmeans")

#: tools whose clusters of a transfer task's query are scored (ARI / NMI) and plotted next to the clustering sets
TRANSFER_CLUSTERERS = ["pybridge_itclust", "pybridge_nmf_transfer", "pca_leiden", "pca_kmeans"]


def tool_applies(tool: Tool, kind: str) -> bool:
    if kind == "transfer":
        return tool.annotation or tool.clusters in ("transfer", "both")
    return tool.clusters in ("sets", "both")


# Modules a Python tool's zygote imports before it forks the tool's worker (see zygote.py): the ones the
# worker would otherwise import at the start of every call. R tools start from an empty zygote (a launcher).
PRELOAD = {
    "pybridge": ("anndata", "torch", "pybridge.api"),
    "logreg": ("anndata", "sklearn.linear_model"),
    "celltypist": ("anndata", "sklearn", "celltypist"),
    "scanvi": ("anndata", "torch", "scvi"),
    "pca_leiden": ("anndata", "scanpy", "leidenalg"),
    "pca_kmeans": ("anndata", "scanpy", "sklearn.cluster"),
}


def preload_for(tool: Tool) -> tuple:
    if tool.runner == "r":
        return ()
    key = "pybridge" if tool.group == "pybridge" else "scanvi" if tool.runner == "scvi" else tool.name
    return PRELOAD.get(key, ("anndata",)) + ("benchmarks.worker",)


def label_of(tool: str) -> str:
    """The tool's display label (the name itself for a tool not in the table)."""
    return TOOLS[tool].display if tool in TOOLS else tool


def tool_order(df) -> list:
    """The tools of a results table (its ``tool`` column), in the table's order."""
    return [t for t in TOOLS if t in set(df["tool"])]
