"""Benchmark tasks and the one-time preparation every tool then reads.

Reference -> query tasks (from ../shared/data/README.md, as in ``bench_scnym.py``):
panc8_small leave-one-technology-out (5 tasks), baron mouse1 -> mouse2, cellbench
CEL-seq2 -> Drop-seq, cellbench 5 cell lines plate 1 -> plate 3, and Zheng sorted
PBMC train -> test (B cells are absent from the reference).

Clustering sets: the seven sets with ground truth listed in the same README.

Validation tasks (``--task-set validation``): six more reference -> query pairs
from the same files (the reverse direction or another plate), on which no default
or option of pybridge was chosen; they check that what wins on the dev tasks is
not fitted to them.

Preparation (once per task, cached under ``<out>/prepared/<task>``): reference and
query are restricted to their shared genes (reference order) *once*, and every
tool reads the same files:

* ``ref.h5ad`` / ``query.h5ad``: counts (CSR float32) as stored in the source file
  (panc8's non-integer values are left as they are; each tool normalises them its
  own way), ``obs['cell_type']`` only in the reference; the query carries no labels;
* ``truth.csv``: the query's labels, read only by the scorer;
* ``ref_X.*`` / ``query_X.*``: the same CSR matrices as raw binary vectors
  (data float32, indices int32, indptr float64) plus ``*_genes.txt`` / ``*_cells.txt``
  and ``ref_labels.txt``, for R (read with ``readBin``; no HDF5 package needed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

PANC8_TECHS = ["celseq", "celseq2", "fluidigmc1", "indrop", "smartseq2"]

#: task -> (reference file, query file); panc8 tasks are built from panc8_small
PAIRS = {
    "baron_mouse1->2": ("baron_mouse1", "baron_mouse2"),
    "cellbench_celseq2->dropseq": ("cellbench_sc_celseq2", "cellbench_sc_dropseq"),
    "cellbench_5cl_p1->p3": ("cellbench_sc_celseq2_5cl_p1", "cellbench_sc_celseq2_5cl_p3"),
    "zheng_train->test": ("casi_zheng_sorted_train", "casi_zheng_sorted_test"),
}
ANNOTATION_TASKS = [f"panc8:{t}" for t in PANC8_TECHS] + list(PAIRS)
#: held-out check tasks: no setting was chosen on them (session 14)
VALIDATION_PAIRS = {
    "baron_mouse2->1": ("baron_mouse2", "baron_mouse1"),
    "cellbench_dropseq->celseq2": ("cellbench_sc_dropseq", "cellbench_sc_celseq2"),
    "cellbench_5cl_p1->p2": ("cellbench_sc_celseq2_5cl_p1", "cellbench_sc_celseq2_5cl_p2"),
    "cellbench_5cl_p2->p3": ("cellbench_sc_celseq2_5cl_p2", "cellbench_sc_celseq2_5cl_p3"),
    "cellbench_5cl_p3->p1": ("cellbench_sc_celseq2_5cl_p3", "cellbench_sc_celseq2_5cl_p1"),
    "zheng_test->train": ("casi_zheng_sorted_test", "casi_zheng_sorted_train"),
}
VALIDATION_TASKS = list(VALIDATION_PAIRS)
CLUSTERING_SETS = [
    "dcc_10X_PBMC_top2000",
    "dcc_mouse_bladder_cell_top2000",
    "simlr_pollen",
    "sc3_yan",
    "pbmc3k_counts_seurat_labels",
    "baron_mouse2",
    "cellbench_sc_celseq2_5cl_p2",
]
QUICK_ANNOTATION = ["panc8:celseq2"]
QUICK_CLUSTERING = ["cellbench_sc_celseq2_5cl_p2"]
#: --task-set -> (reference -> query tasks, clustering sets)
TASK_SETS = {"dev": (ANNOTATION_TASKS, CLUSTERING_SETS), "validation": (VALIDATION_TASKS, [])}
TRANSFER_TASKS = ANNOTATION_TASKS + VALIDATION_TASKS
_FILE_PAIRS = PAIRS | VALIDATION_PAIRS  # every task read from two files (panc8 tasks are cut from one)


def files_of(name: str) -> list[str]:
    """The data files (stems of ``<data>/<stem>.h5ad``) a task or clustering set reads."""
    if name.startswith("panc8:"):
        return ["panc8_small"]
    return list(_FILE_PAIRS[name]) if name in _FILE_PAIRS else [name]


@dataclass
class Prepared:
    """Paths and facts of one prepared task (transfer: ref + query; clustering: query only)."""

    name: str
    kind: str  # "transfer" or "clustering"
    dir: Path
    n_ref: int
    n_query: int
    n_genes: int
    n_types: int  # types in the query (the true K)
    truth: np.ndarray
    ref_classes: list

    @property
    def unseen(self) -> list:
        return sorted(set(self.truth) - set(self.ref_classes)) if self.kind == "transfer" else []


def _read(path: Path):
    import anndata as ad

    if not path.exists():
        raise FileNotFoundError(f"{path} not found; pass --data DIR (the folder with the .h5ad files).")
    return ad.read_h5ad(path)


def load_pair(data: Path, name: str):
    """(reference, query) AnnData of a transfer task, as stored in the data folder."""
    if name.startswith("panc8:"):
        tech = name.split(":", 1)[1]
        a = _read(data / "panc8_small.h5ad")
        m = (a.obs["batch"].astype(str) == tech).to_numpy()
        if not m.any():
            raise ValueError(f"No panc8 cells of technology {tech!r}.")
        return a[~m].copy(), a[m].copy()
    if name not in _FILE_PAIRS:
        raise ValueError(f"Unknown task {name!r}; known: {', '.join(TRANSFER_TASKS)}.")
    r, q = _FILE_PAIRS[name]
    return _read(data / f"{r}.h5ad"), _read(data / f"{q}.h5ad")


def _counts(a) -> sp.csr_matrix:
    X = a.X
    X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else sp.csr_matrix(np.asarray(X, dtype=np.float32))
    X.sum_duplicates()
    X.sort_indices()
    return X


def _write_binary(X: sp.csr_matrix, prefix: Path) -> None:
    X = X.tocsr()
    X.sort_indices()  # column selection in another order leaves unsorted indices; R's dgCMatrix requires sorted ones
    X.data.astype("<f4").tofile(f"{prefix}_X.data")
    X.indices.astype("<i4").tofile(f"{prefix}_X.indices")
    X.indptr.astype("<f8").tofile(f"{prefix}_X.indptr")


def write_side(X: sp.csr_matrix, cells, genes, out: Path, side: str, labels=None, r_files: bool = True) -> None:
    """Write one side (``ref`` or ``query``) as h5ad (+ binary CSR for R)."""
    import anndata as ad

    obs = pd.DataFrame(index=pd.Index(np.asarray(cells, dtype=str), name=None))
    if labels is not None:
        obs["cell_type"] = pd.Categorical(np.asarray(labels, dtype=str))
    var = pd.DataFrame(index=pd.Index(np.asarray(genes, dtype=str)))
    ad.AnnData(X=X, obs=obs, var=var).write_h5ad(out / f"{side}.h5ad")
    if r_files:
        _write_binary(X, out / side)
        (out / f"{side}_genes.txt").write_text("\n".join(map(str, genes)) + "\n")
        (out / f"{side}_cells.txt").write_text("\n".join(map(str, cells)) + "\n")
        if labels is not None:
            (out / f"{side}_labels.txt").write_text("\n".join(map(str, labels)) + "\n")


def _finish(out: Path, meta: dict, truth) -> None:
    pd.DataFrame({"cell_type": np.asarray(truth, dtype=str)}).to_csv(out / "truth.csv", index=False)
    (out / "task.json").write_text(json.dumps(meta, indent=1))


def prepare_transfer(name: str, data: Path, root: Path, *, ref=None, query=None, labels_key="cell_type") -> Prepared:
    """Shared genes once; write the files every tool reads (cached: reused when ``task.json`` exists)."""
    out = root / safe(name)
    if not (out / "task.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        if ref is None:
            ref, query = load_pair(data, name)
        rg = pd.Index(ref.var_names.astype(str))
        qg = pd.Index(query.var_names.astype(str))
        if rg.has_duplicates or qg.has_duplicates:  # keep the first occurrence, the same for every tool
            ref = ref[:, ~rg.duplicated()].copy()
            query = query[:, ~qg.duplicated()].copy()
            rg, qg = rg[~rg.duplicated()], qg[~qg.duplicated()]
        genes = rg[rg.isin(qg)]
        if len(genes) < 50:
            raise ValueError(f"{name}: only {len(genes)} shared genes.")
        Xr = _counts(ref)[:, rg.get_indexer(genes)].tocsr()
        Xq = _counts(query)[:, qg.get_indexer(genes)].tocsr()
        yr = ref.obs[labels_key].astype(str).to_numpy()
        yq = query.obs[labels_key].astype(str).to_numpy()
        write_side(Xr, ref.obs_names, genes, out, "ref", labels=yr)
        write_side(Xq, query.obs_names, genes, out, "query")
        meta = dict(
            name=name,
            kind="transfer",
            n_ref=int(Xr.shape[0]),
            n_query=int(Xq.shape[0]),
            n_genes=int(len(genes)),
            ref_genes=int(len(rg)),
            query_genes=int(len(qg)),
            ref_classes=sorted(set(yr)),
            n_types=int(len(set(yq))),
        )
        _finish(out, meta, yq)
    return load_prepared(out)


def prepare_clustering(name: str, data: Path, root: Path) -> Prepared:
    out = root / safe(name)
    if not (out / "task.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        a = _read(data / f"{name}.h5ad")
        X = _counts(a)
        y = a.obs["cell_type"].astype(str).to_numpy()
        write_side(X, a.obs_names, a.var_names.astype(str), out, "query", r_files=False)
        meta = dict(
            name=name,
            kind="clustering",
            n_ref=0,
            n_query=int(X.shape[0]),
            n_genes=int(X.shape[1]),
            ref_classes=[],
            n_types=int(len(set(y))),
            x_kind=str(a.uns.get("x_kind", "")),
        )
        _finish(out, meta, y)
    return load_prepared(out)


def load_prepared(out: Path) -> Prepared:
    meta = json.loads((out / "task.json").read_text())
    truth = pd.read_csv(out / "truth.csv", dtype=str, keep_default_na=False)["cell_type"].to_numpy()
    return Prepared(
        name=meta["name"],
        kind=meta["kind"],
        dir=out,
        n_ref=meta["n_ref"],
        n_query=meta["n_query"],
        n_genes=meta["n_genes"],
        n_types=meta["n_types"],
        truth=truth,
        ref_classes=meta["ref_classes"],
    )


def safe(name: str) -> str:
    return name.replace(":", "_").replace("->", "_to_").replace("/", "_")
