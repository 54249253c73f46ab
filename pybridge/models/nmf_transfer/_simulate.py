"""The hierarchical negative-binomial simulation of Mieth et al. (2019), with source/target splits.

Cells come from leaf clusters of a tree (default: the paper's eight leaves
under five top-level nodes, ``(1, 2, 3, (4, 5), (6, (7, 8)))``):

1. cluster sizes: recursive symmetric Dirichlet (concentration 10) over the
   children of every node, floored, with the rounding remainder given to the
   first child; drawn again while a cluster would get fewer than 2 cells;
2. background means mu_g ~ Gamma(shape 2, rate 0.1);
3. for every node, a fraction U(0.1, 0.4) of the genes is differentially
   expressed; its log2 fold change is added to the parent's, so children
   differ from their parent as the parent differs from the background;
4. counts ~ NegBin(mean mu_g * f_c * 2^lfc, dispersion 0.1) with a per-cell
   factor f_c = 2^N(0, 0.5).

The fold-change draw follows the authors' code, which produced the figures:
one magnitude ~ N(1, 0.5) per node with a random sign per DE gene. The paper's
text reads as one draw per gene: ``logfc_per_gene=True``.

:func:`simulate_transfer` splits a simulated population into a source and a
target with complete, incomplete or no overlap of the top-level nodes (the
paper's three settings, the code's splitting mode 7). Cells are drawn from a
population ``pool_factor`` times larger than needed, as in the authors'
scripts; since counts are independent given a cell's cluster, only the
selected cells' counts are sampled.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: the paper's tree: leaves 1-3 are top-level nodes, {4, 5} and {6, {7, 8}} are the other two
PAPER_TREE = (1, 2, 3, (4, 5), (6, (7, 8)))
TOP_NAMES = "VWXYZABCDEFGHIJKLMNOPQRSTU"
OVERLAP_COMMON = {"complete": 5, "incomplete": 3, "none": 0}


def _leaves(node) -> list:
    if isinstance(node, (list, tuple)):
        return [leaf for child in node for leaf in _leaves(child)]
    return [node]


def _sizes(node, n: int, conc: float, rng: np.random.Generator) -> dict:
    """Leaf -> number of cells under ``node`` (a tuple of children) holding ``n`` cells."""
    k = len(node)
    for _ in range(1000):
        sizes = np.floor(rng.dirichlet(np.full(k, conc)) * n).astype(np.int64)
        sizes[0] += n - sizes.sum()
        if sizes.min() >= 2:
            break
    else:
        raise ValueError(f"Cannot split {n} cells into {k} clusters of at least 2 cells; simulate more cells.")
    out = {}
    for child, m in zip(node, sizes):
        if isinstance(child, (list, tuple)):
            out.update(_sizes(child, int(m), conc, rng))
        else:
            out[child] = int(m)
    return out


def _logfc(node, parent: np.ndarray, rng, de_fraction, logfc_mean, logfc_sd, per_gene) -> dict:
    """Leaf -> log2 fold change vector (genes), accumulated down the tree."""
    out = {}
    g = len(parent)
    for child in node:
        p = rng.uniform(*de_fraction)
        n_de = int(math.floor(g * p))
        lfc = np.zeros(g)
        genes = rng.permutation(g)[:n_de]
        signs = np.sign(rng.standard_normal(n_de))
        mags = rng.normal(logfc_mean, logfc_sd, size=n_de) if per_gene else rng.normal(logfc_mean, logfc_sd)
        lfc[genes] = signs * mags
        own = parent + lfc
        if isinstance(child, (list, tuple)):
            out.update(_logfc(child, own, rng, de_fraction, logfc_mean, logfc_sd, per_gene))
        else:
            out[child] = own
    return out


class _Population:
    def __init__(
        self,
        n_cells,
        n_genes,
        tree,
        dirichlet,
        gamma_shape,
        gamma_rate,
        nb_dispersion,
        de_fraction,
        logfc_mean,
        logfc_sd,
        cell_sd,
        per_gene,
        rng,
    ):
        self.tree, self.n_genes, self.rng = tuple(tree), int(n_genes), rng
        self.dispersion, self.cell_sd = float(nb_dispersion), float(cell_sd)
        self.sizes = _sizes(self.tree, int(n_cells), dirichlet, rng)
        self.means = rng.gamma(gamma_shape, 1.0 / gamma_rate, size=self.n_genes)
        self.lfc = _logfc(self.tree, np.zeros(self.n_genes), rng, tuple(de_fraction), logfc_mean, logfc_sd, per_gene)
        self.leaves = _leaves(self.tree)
        self.labels = np.concatenate([np.full(self.sizes[leaf], str(leaf), dtype=object) for leaf in self.leaves])
        top = {}
        for i, node in enumerate(self.tree):
            for leaf in _leaves(node):
                top[str(leaf)] = TOP_NAMES[i] if len(self.tree) <= len(TOP_NAMES) else str(i)
        self.top_of = top

    def counts(self, labels: np.ndarray) -> sp.csr_matrix:
        """NB counts for cells with the given leaf labels (in that order)."""
        n, g = len(labels), self.n_genes
        out = np.empty((n, g), dtype=np.float32)
        fac = 2.0 ** self.rng.normal(0.0, self.cell_sd, size=n)
        r = 1.0 / self.dispersion
        for leaf in self.leaves:
            idx = np.flatnonzero(labels == str(leaf))
            if len(idx) == 0:
                continue
            base = self.means * 2.0 ** self.lfc[leaf]
            for s in range(0, len(idx), 256):
                rows = idx[s : s + 256]
                mu = fac[rows, None] * base[None, :]
                out[rows] = self.rng.negative_binomial(r, r / (r + mu))
        return sp.csr_matrix(out)


def _adata(pop: _Population, labels: np.ndarray, prefix: str, params: dict):
    import anndata as ad

    X = pop.counts(labels)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(labels, categories=[str(leaf) for leaf in pop.leaves]),
            "top_cluster": pd.Categorical([pop.top_of[lab] for lab in labels]),
        },
        index=[f"{prefix}{i}" for i in range(len(labels))],
    )
    var = pd.DataFrame(index=[f"gene{j:05d}" for j in range(pop.n_genes)])
    a = ad.AnnData(X=X, obs=obs, var=var)
    a.uns["simulation"] = params
    return a


def _check(n_genes, tree):
    if n_genes < 10:
        raise ValueError(f"n_genes={n_genes} is too small; simulate at least 10 genes.")
    if len(tree) < 2:
        raise ValueError("The cluster tree needs at least two top-level nodes.")


def simulate(
    n_cells: int = 1800,
    n_genes: int = 10000,
    *,
    tree=PAPER_TREE,
    dirichlet: float = 10.0,
    gamma_shape: float = 2.0,
    gamma_rate: float = 0.1,
    nb_dispersion: float = 0.1,
    de_fraction: tuple[float, float] = (0.1, 0.4),
    logfc_mean: float = 1.0,
    logfc_sd: float = 0.5,
    cell_sd: float = 0.5,
    logfc_per_gene: bool = False,
    seed: int = 0,
):
    """Simulate one population of the paper's hierarchical NB model (see the module docstring).

    Returns an AnnData of counts (cells x genes, CSR float32) with the leaf
    cluster in ``obs['cell_type']`` and its top-level node in ``obs['top_cluster']``.
    """
    _check(n_genes, tree)
    rng = np.random.default_rng(int(seed))
    params = dict(
        n_cells=n_cells,
        n_genes=n_genes,
        tree=repr(tuple(tree)),
        dirichlet=dirichlet,
        gamma_shape=gamma_shape,
        gamma_rate=gamma_rate,
        nb_dispersion=nb_dispersion,
        de_fraction=list(de_fraction),
        logfc_mean=logfc_mean,
        logfc_sd=logfc_sd,
        cell_sd=cell_sd,
        logfc_per_gene=logfc_per_gene,
        seed=seed,
    )
    pop = _Population(
        n_cells,
        n_genes,
        tree,
        dirichlet,
        gamma_shape,
        gamma_rate,
        nb_dispersion,
        de_fraction,
        logfc_mean,
        logfc_sd,
        cell_sd,
        logfc_per_gene,
        rng,
    )
    labels = pop.labels[rng.permutation(len(pop.labels))]
    return _adata(pop, labels, "cell", params)


def simulate_transfer(
    n_source: int = 1000,
    n_target: int = 800,
    overlap: str = "complete",
    n_genes: int = 10000,
    *,
    pool_factor: int = 10,
    tree=PAPER_TREE,
    seed: int = 0,
    **kwargs,
):
    """Simulate a (source, target) pair with ``overlap`` in {"complete", "incomplete", "none"}.

    Top-level nodes are assigned at random (``common`` = 5 / 3 / 0 shared
    nodes; the target gets floor((T + common) / 2) nodes and the source the
    rest plus the shared ones, with T top-level nodes in the tree). Shared
    cells are split between source and target in proportion to the number of
    shared versus exclusive leaves. The target's cells are in random order,
    so its first m cells are a random subsample (the paper's nested target
    sizes). ``kwargs`` are :func:`simulate` options. Returns two AnnData.
    """
    if overlap not in OVERLAP_COMMON:
        raise ValueError(f"overlap must be one of {', '.join(OVERLAP_COMMON)}, not {overlap!r}.")
    _check(n_genes, tree)
    tree = tuple(tree)
    T = len(tree)
    common = min(OVERLAP_COMMON[overlap], T)
    if overlap == "complete":
        common = T
    n_trg_top = (T + common) // 2
    n_src_top = T - n_trg_top + common
    if n_trg_top < 1 or n_src_top < 1:
        raise ValueError("The tree has too few top-level nodes for this overlap setting.")
    rng = np.random.default_rng(int(seed))
    opts = dict(
        dirichlet=10.0,
        gamma_shape=2.0,
        gamma_rate=0.1,
        nb_dispersion=0.1,
        de_fraction=(0.1, 0.4),
        logfc_mean=1.0,
        logfc_sd=0.5,
        cell_sd=0.5,
        logfc_per_gene=False,
    )
    unknown = set(kwargs) - set(opts)
    if unknown:
        raise TypeError(f"Unknown simulation option(s): {', '.join(sorted(unknown))}.")
    opts.update(kwargs)
    pop = _Population(
        pool_factor * (n_source + n_target),
        n_genes,
        tree,
        opts["dirichlet"],
        opts["gamma_shape"],
        opts["gamma_rate"],
        opts["nb_dispersion"],
        opts["de_fraction"],
        opts["logfc_mean"],
        opts["logfc_sd"],
        opts["cell_sd"],
        opts["logfc_per_gene"],
        rng,
    )
    nodes = np.arange(T)
    C = rng.choice(nodes, common, replace=False)
    S = rng.choice(np.setdiff1d(nodes, C), n_src_top - common, replace=False)
    Tn = rng.choice(np.setdiff1d(nodes, np.union1d(S, C)), n_trg_top - common, replace=False)
    leaves = lambda idx: [str(leaf) for i in idx for leaf in _leaves(tree[int(i)])]  # noqa: E731
    Cl, Sl, Tl = leaves(C), leaves(S), leaves(Tn)
    labels = pop.labels
    shared = rng.permutation(np.flatnonzero(np.isin(labels, Cl)))
    n_shared_trg = int(n_target * len(Cl) / max(len(Tl) + len(Cl), 1))
    n_shared_src = int(n_source * len(Cl) / max(len(Sl) + len(Cl), 1))
    if n_shared_trg + n_shared_src > len(shared):
        raise ValueError("Not enough shared cells in the simulated population; raise pool_factor.")
    trg = list(shared[:n_shared_trg])
    src = list(shared[n_shared_trg : n_shared_trg + n_shared_src])
    for own, quota, out in ((Tl, n_target - n_shared_trg, trg), (Sl, n_source - n_shared_src, src)):
        if quota > 0:
            pool = rng.permutation(np.flatnonzero(np.isin(labels, own)))
            if len(pool) < quota:
                raise ValueError("Not enough cells in the exclusive clusters; raise pool_factor.")
            out.extend(pool[:quota])
    trg = rng.permutation(np.asarray(trg))
    src = np.sort(np.asarray(src))
    params = dict(
        n_source=n_source,
        n_target=n_target,
        overlap=overlap,
        n_genes=n_genes,
        pool_factor=pool_factor,
        tree=repr(tree),
        seed=seed,
        shared_top=[TOP_NAMES[i] for i in sorted(C)],
        source_only_top=[TOP_NAMES[i] for i in sorted(S)],
        target_only_top=[TOP_NAMES[i] for i in sorted(Tn)],
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()},
    )
    source = _adata(pop, labels[src], "src", params)
    target = _adata(pop, labels[trg], "trg", params)
    return source, target
