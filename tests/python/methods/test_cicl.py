"""CICL: loss functions, K-means, preprocessing, the estimator, outputs and behaviour on real data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from conftest import load
from sklearn.metrics import adjusted_rand_score

import pybridge
from pybridge.api import compute_cicl
from pybridge.models._registry import get_method
from pybridge.models.cicl import (
    CICL,
    CICLConfig,
    CICLEncoder,
    cluster_fne,
    cluster_supcon,
    estimate_n_clusters,
    info_nce,
    kmeans,
    nt_xent,
    ntxent_supcon,
    similarities,
    student_t,
)

#: A small network and short schedule for the property tests (the slow real-data tests use the paper's sizes).
SMALL = dict(
    n_top_genes=200,
    n_layers=1,
    head_dim=32,
    ffn_dim=64,
    proj_hidden=64,
    proj_dim=32,
    n_epochs=4,
    kmeans_n_init=3,
    kmeans_n_init_train=1,
    verbose=False,
    device="cpu",
)


@pytest.fixture(scope="module")
def cellbench():
    """CellBench CEL-seq2 plate 2: 307 cells of 5 cell lines (labels from SNP genotypes)."""
    return load("cellbench_sc_celseq2_5cl_p2")


@pytest.fixture(scope="module")
def small(cellbench):
    """150 cells of the 5 lines (30 each), fresh copy per module."""
    rng = np.random.default_rng(0)
    y = cellbench.obs["cell_type"].astype(str).to_numpy()
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 30, replace=False) for c in np.unique(y)]))
    return cellbench[idx].copy()


@pytest.fixture(scope="module")
def fitted(small):
    return CICL(n_clusters=5, seed=0, **SMALL).fit(small)


# ----------------------------------------------------------------------------- losses
def _views(b=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(b, d, generator=g), dim=1)
    z2 = F.normalize(torch.randn(b, d, generator=g), dim=1)
    return z1, z2


def test_nt_xent_matches_the_paper_formula():
    z1, z2, T = *_views(), 0.5
    b = len(z1)
    z = torch.cat([z1, z2])

    def loss(i, partner):  # Eq. 12 with the 2B - 1 other views in the denominator
        num = torch.exp(z[i] @ z[partner] / T)
        den = sum(torch.exp(z[i] @ z[m] / T) for m in range(2 * b) if m != i)
        return -torch.log(num / den)

    expected = sum(loss(i, i + b) + loss(i + b, i) for i in range(b)) / (2 * b)
    assert torch.allclose(nt_xent(similarities(z1, z2, T)), expected, atol=1e-5)


def test_info_nce_is_one_directional_cross_view():
    z1, z2, T = *_views(), 0.5
    expected = F.cross_entropy(z1 @ z2.T / T, torch.arange(len(z1)))
    assert torch.allclose(info_nce(similarities(z1, z2, T)), expected, atol=1e-5)
    assert not torch.allclose(info_nce(similarities(z2, z1, T)), expected, atol=1e-4)


def test_cluster_supcon_matches_definition_and_is_bounded():
    z1, z2, T = *_views(), 0.5
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    s = similarities(z1, z2, T)
    b = len(z1)
    z, y = torch.cat([z1, z2]), torch.cat([labels, labels])
    losses = []
    for a in range(2 * b):
        e = {m: torch.exp(z[a] @ z[m] / T) for m in range(2 * b) if m != a}
        pos = sum(v for m, v in e.items() if y[m] == y[a])  # partner + same-cluster cells, both views
        neg = sum(v for m, v in e.items() if y[m] != y[a])
        losses.append(-torch.log(pos / (pos + neg)))
    assert torch.allclose(cluster_supcon(s, labels), torch.stack(losses).mean(), atol=1e-5)
    # positives include the partner, so the loss never exceeds NT-Xent and is >= 0
    assert 0 <= float(cluster_supcon(s, labels)) <= float(nt_xent(s)) + 1e-6
    # one pseudo-cluster in the batch: no negatives, exactly zero (Eq. 15 as printed would divide by zero)
    assert float(cluster_supcon(s, torch.zeros(b, dtype=torch.long))) == pytest.approx(0.0, abs=1e-6)


def test_similarities_gradient_matches_autograd_of_the_plain_product():
    torch.manual_seed(4)
    z1 = F.normalize(torch.randn(12, 8, dtype=torch.float64), dim=1).requires_grad_()
    z2 = F.normalize(torch.randn(12, 8, dtype=torch.float64), dim=1).requires_grad_()
    w = torch.randn(24, 24, dtype=torch.float64)
    (similarities(z1, z2, 0.5).masked_fill(torch.eye(24, dtype=torch.bool), 0) * w).sum().backward()
    g1, g2 = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    z = torch.cat([z1, z2])
    ((z @ z.T / 0.5).masked_fill(torch.eye(24, dtype=torch.bool), 0) * w).sum().backward()
    assert torch.allclose(g1, z1.grad) and torch.allclose(g2, z2.grad)
    assert torch.autograd.gradcheck(
        lambda a, b: similarities(a, b, 0.5).masked_fill(torch.eye(24, dtype=torch.bool), 0),
        (z1.detach().requires_grad_(), z2.detach().requires_grad_()),
    )


def _losses_and_grads(z1, z2, labels, temperature, w_ins, w_clu, fused):
    """(l_ins, l_clu, dz1, dz2) of ``w_ins l_ins + w_clu l_clu``, fused or from the separate functions."""
    if fused:
        l_ins, l_clu = ntxent_supcon(z1, z2, labels, temperature)
    else:
        s = similarities(z1, z2, temperature)
        l_ins, l_clu = nt_xent(s), cluster_supcon(s, labels)
    (w_ins * l_ins + w_clu * l_clu).backward()
    out = (l_ins.item(), l_clu.item(), z1.grad.clone(), z2.grad.clone())
    z1.grad, z2.grad = None, None
    return out


def test_fused_ntxent_supcon_equals_the_separate_losses_and_their_gradients():
    torch.manual_seed(3)
    b = 40
    z1 = F.normalize(torch.randn(b, 16), dim=1).requires_grad_()
    z2 = F.normalize(torch.randn(b, 16), dim=1).requires_grad_()
    labels = torch.randint(0, 4, (b,))
    (a_ins, a_clu, a_g1, a_g2), (b_ins, b_clu, b_g1, b_g2) = (
        _losses_and_grads(z1, z2, labels, 0.5, 1.0, 0.1, fused) for fused in (False, True)
    )
    assert b_ins == pytest.approx(a_ins, rel=1e-5) and b_clu == pytest.approx(a_clu, rel=1e-5)
    assert torch.allclose(a_g1, b_g1, atol=1e-6) and torch.allclose(a_g2, b_g2, atol=1e-6)
    # one pseudo-cluster: the cluster term is exactly 0 here too
    assert float(ntxent_supcon(z1.detach(), z2.detach(), torch.zeros(b, dtype=torch.long), 0.5)[1]) == pytest.approx(
        0.0, abs=1e-6
    )
    with pytest.raises(ValueError, match="temperature"):
        ntxent_supcon(z1, z2, labels, 0.01)


def test_fused_ntxent_supcon_gradient_is_exact_for_any_weighting_and_runs_once():
    torch.manual_seed(5)
    b = 10
    z1 = F.normalize(torch.randn(b, 6, dtype=torch.float64), dim=1).requires_grad_()
    z2 = F.normalize(torch.randn(b, 6, dtype=torch.float64), dim=1).requires_grad_()
    labels = torch.tensor([2, 0, 1, 2, 1, 0, 2, 2, 1, 0])
    for w_ins, w_clu in [(1.0, 0.0), (0.0, 1.0), (0.7, -1.3)]:
        ref, fused = (_losses_and_grads(z1, z2, labels, 0.2, w_ins, w_clu, f) for f in (False, True))
        assert ref[0] == pytest.approx(fused[0], rel=1e-12) and ref[1] == pytest.approx(fused[1], rel=1e-12)
        assert torch.allclose(ref[2], fused[2], atol=1e-12) and torch.allclose(ref[3], fused[3], atol=1e-12)
    l_ins, l_clu = ntxent_supcon(z1, z2, labels, 0.5)
    (l_ins + l_clu).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        l_ins.backward()


def test_cluster_fne_reduces_to_nt_xent_with_singleton_clusters():
    z1, z2, T = *_views(), 0.5
    s = similarities(z1, z2, T)
    b = len(z1)
    # each cell its own pseudo-cluster: nothing removed from the negatives; per-cluster means summed over B clusters
    assert torch.allclose(cluster_fne(s, torch.arange(b)), b * nt_xent(s), atol=1e-4)
    # removing same-cluster negatives can only lower the loss
    merged = cluster_fne(s, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert torch.isfinite(merged)
    assert float(cluster_fne(s, torch.zeros(b, dtype=torch.long))) == pytest.approx(0.0, abs=1e-6)


def test_student_t_rows_sum_to_one_and_argmax_is_nearest_centre():
    g = torch.Generator().manual_seed(1)
    h, c = torch.randn(50, 4, generator=g), torch.randn(3, 4, generator=g)
    q = student_t(h, c, alpha=1.0)
    assert torch.allclose(q.sum(1), torch.ones(50), atol=1e-6)
    assert torch.equal(q.argmax(1), torch.cdist(h, c).argmin(1))
    d2 = torch.cdist(h, c) ** 2  # alpha = 1: q proportional to 1 / (1 + d^2)
    ref = 1 / (1 + d2)
    assert torch.allclose(q, ref / ref.sum(1, keepdim=True), atol=1e-6)


def test_kmeans_recovers_separated_blobs_and_is_repeatable():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    truth = torch.arange(4).repeat_interleave(40)
    x = centres[truth] + 0.5 * torch.randn(160, 2, generator=g)
    lab1, c1, inertia1 = kmeans(x, 4, n_init=5, generator=torch.Generator().manual_seed(3))
    lab2, c2, inertia2 = kmeans(x, 4, n_init=5, generator=torch.Generator().manual_seed(3))
    assert adjusted_rand_score(truth.numpy(), lab1.numpy()) == 1.0
    assert torch.equal(lab1, lab2) and torch.equal(c1, c2) and inertia1 == inertia2
    assert inertia1 == pytest.approx(float(((x - c1[lab1]) ** 2).sum()), rel=1e-4)
    with pytest.raises(ValueError, match="k <= number of cells"):
        kmeans(x[:3], 4, generator=torch.Generator())


def test_estimate_n_clusters_on_blobs():
    g = torch.Generator().manual_seed(0)
    centres = 12 * torch.randn(6, 5, generator=g)
    x = (centres.repeat_interleave(50, 0) + torch.randn(300, 5, generator=g)).numpy()
    for method in ("eigengap", "silhouette"):
        k, scores = estimate_n_clusters(x, method=method, k_min=2, k_max=12, seed=0, n_init=3)
        assert k == 6, (method, scores)
        assert set(scores) <= set(range(2, 13))


# ----------------------------------------------------------------------------- modules
def test_encoder_cell_scope_is_per_cell_and_batch_scope_mixes_cells():
    torch.manual_seed(0)
    x = torch.randn(10, 16)
    cell = CICLEncoder(16, n_layers=2, n_heads=2, head_dim=8, ffn_dim=32, dropout=0.0, attention="cell").eval()
    batch = CICLEncoder(16, n_layers=2, n_heads=2, head_dim=8, ffn_dim=32, dropout=0.0, attention="batch").eval()
    with torch.no_grad():
        assert cell(x).shape == (10, 16) and batch(x).shape == (10, 16)
        # "cell": a cell's embedding does not depend on the other cells of the batch
        assert torch.allclose(cell(x)[:4], cell(x[:4]), atol=1e-5)
        # "batch": attention across the cells of the batch
        assert not torch.allclose(batch(x)[:4], batch(x[:4]), atol=1e-4)
    assert not any("query" in n for n, _ in cell.named_parameters())  # no unused projections


def test_cell_scope_attention_is_the_two_step_value_output_map_with_the_same_gradients():
    torch.manual_seed(2)
    layer = CICLEncoder(16, n_layers=1, n_heads=2, head_dim=8, ffn_dim=32, dropout=0.0).layers[0]
    x = torch.randn(40, 16, dtype=torch.float64)  # enough cells for the merged product (n > 16 x 16 / 16)
    layer = layer.double()
    w = torch.randn(40, 16, dtype=torch.float64)
    grads = []
    for attn in (layer.attention, lambda t: layer.out(layer.value(t))):  # merged product vs W_O (W_V x)
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        out = attn(xi)
        (out * w).sum().backward()
        grads.append((out.detach(), xi.grad, layer.value.weight.grad.clone(), layer.out.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_norm_placement_decides_whether_the_encoder_keeps_each_cells_scale():
    torch.manual_seed(0)
    x = torch.randn(6, 16)
    x3 = torch.cat([x, 3 * x])  # the same cells at three times the scale
    enc = {
        n: CICLEncoder(16, n_layers=2, n_heads=2, head_dim=8, ffn_dim=32, dropout=0.0, norm=n).eval()
        for n in ("post", "pre", "none")
    }
    with torch.no_grad():
        out = {n: e(x3) for n, e in enc.items()}
    # post-LN (paper): every layer ends in a per-cell LayerNorm, so the output ignores the cell's scale
    torch.testing.assert_close(out["post"][:6], out["post"][6:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["post"].mean(1), torch.zeros(12), atol=1e-5, rtol=0)
    # pre-LN and no LN: the residual stream carries the input, so the scaled cells stay apart
    for n in ("pre", "none"):
        ratio = out[n][6:].norm(dim=1) / out[n][:6].norm(dim=1)
        assert (ratio > 1.5).all(), (n, ratio)
    # pre and post have the same parameters (only their order of use differs); "none" has no LayerNorm
    assert [k for k, _ in enc["pre"].named_parameters()] == [k for k, _ in enc["post"].named_parameters()]
    assert not any("norm" in k for k, _ in enc["none"].named_parameters())
    with pytest.raises(ValueError, match="norm"):
        CICLConfig(norm="layer")


# ----------------------------------------------------------------------------- preprocessing
def test_normalized_dispersion_nan_for_silent_genes_and_matches_scanpy(cellbench):
    from pybridge.data import get_counts, normalize_total, normalized_dispersion

    X = get_counts(cellbench)
    lib = np.asarray(X.sum(1)).ravel()
    X_log = normalize_total(X, float(np.median(lib)), log=True)
    nd = normalized_dispersion(X_log, logged=True)
    assert np.isfinite(nd).mean() > 0.9
    with_silent = normalized_dispersion(sp.hstack([X_log, sp.csr_matrix((X.shape[0], 1))]).tocsr(), logged=True)
    assert np.isnan(with_silent[-1])  # a gene without counts is never selected
    sc = pytest.importorskip("scanpy")
    a = ad.AnnData(X_log.copy(), var=pd.DataFrame(index=cellbench.var_names))
    sc.pp.highly_variable_genes(a, flavor="seurat", n_top_genes=500)
    ours = set(np.argsort(-np.where(np.isfinite(nd), nd, -np.inf), kind="stable")[:500])
    theirs = set(np.flatnonzero(a.var["highly_variable"].to_numpy()))
    assert len(ours & theirs) >= 490


def test_scaler_z_scores_and_clips(small):
    from pybridge.data import get_counts
    from pybridge.models.cicl._preprocess import _fit_preprocessing, _Scaler

    prep, Xh = _fit_preprocessing(get_counts(small), small.var_names.astype(str), 200)
    assert Xh.shape == (small.n_obs, 200) and sp.issparse(Xh)
    x = torch.as_tensor(Xh.toarray())
    z = _Scaler(prep, "cpu", None)(x.clone())
    np.testing.assert_allclose(z.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0).numpy(), 1, atol=1e-3)
    assert float(z.abs().max()) > 3
    zc = _Scaler(prep, "cpu", 3.0)(x.clone())
    assert float(zc.abs().max()) <= 3.0
    assert torch.equal(zc, z.clamp(-3, 3))


# ----------------------------------------------------------------------------- estimator
def test_loss_decreases_and_history_is_recorded(small):
    model = CICL(n_clusters=5, seed=0, **{**SMALL, "n_epochs": 20}).fit(small)
    loss = np.asarray(model.history_["loss"])
    assert len(loss) == 20 and np.isfinite(loss).all()
    assert loss[-5:].mean() < loss[:3].mean() - 0.05
    ins, clu = np.asarray(model.history_["instance"]), np.asarray(model.history_["cluster"])
    np.testing.assert_allclose(loss, ins + 0.1 * clu, rtol=1e-5)


def test_result_shapes_and_properties(fitted, small):
    res = fitted.result_
    n, g = small.n_obs, len(fitted.prep_.genes)
    assert g == 200
    assert res.embedding.shape == (n, g)
    assert res.probabilities.shape == (n, 5)
    np.testing.assert_allclose(res.probabilities.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(res.confidence, res.probabilities.max(1))
    assert np.array_equal(res.clusters, res.probabilities.argmax(1))
    assert ((res.confidence > 0) & (res.confidence <= 1)).all()
    sizes = np.bincount(res.clusters, minlength=5)
    assert (np.diff(sizes) <= 0).all()  # "0" is the largest cluster
    assert res.params["n_clusters"] == 5 and not res.params["training"]["n_clusters_estimated"]


def test_to_adata_and_h5ad_roundtrip(fitted, small, tmp_path):
    a = small.copy()
    fitted.result_.to_adata(a, "cicl")
    assert isinstance(a.obs["cicl"].dtype, pd.CategoricalDtype)
    assert set(a.obs["cicl"].astype(str)) <= {str(i) for i in range(5)}
    assert a.obsm["X_cicl"].shape == (a.n_obs, 200)
    assert a.obsm["cicl_probabilities"].shape == (a.n_obs, 5)
    assert a.uns["cicl"]["method"] == "cicl" and a.uns["cicl"]["n_clusters"] == 5
    a.write_h5ad(tmp_path / "c.h5ad")
    b = ad.read_h5ad(tmp_path / "c.h5ad")
    assert (b.obs["cicl"].astype(str) == a.obs["cicl"].astype(str)).all()


def test_same_seed_same_clusters_other_seed_differs(small):
    r1 = CICL(n_clusters=5, seed=3, **SMALL).fit(small).result_
    r2 = CICL(n_clusters=5, seed=3, **SMALL).fit(small).result_
    r3 = CICL(n_clusters=5, seed=4, **SMALL).fit(small).result_
    assert np.array_equal(r1.clusters, r2.clusters)
    np.testing.assert_array_equal(r1.embedding, r2.embedding)
    assert not np.allclose(r1.embedding, r3.embedding)


def test_dense_and_sparse_input_agree(small):
    dense = small.copy()
    dense.X = small.X.toarray()
    a = CICL(n_clusters=5, seed=0, **SMALL).fit(small).result_
    b = CICL(n_clusters=5, seed=0, **SMALL).fit(dense).result_
    assert np.array_equal(a.clusters, b.clusters)


def test_save_load_predict_reproduces_clusters(fitted, small, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = CICL.load(tmp_path / "m", device="cpu", verbose=False)
    pred = loaded.predict(small)
    assert np.array_equal(pred.clusters, fitted.result_.clusters)
    np.testing.assert_allclose(pred.embedding, fitted.result_.embedding, atol=1e-5)
    np.testing.assert_allclose(loaded.transform(small), fitted.result_.embedding, atol=1e-5)
    # genes in another order, and extra genes, are aligned by name
    shuffled = small[:, np.random.default_rng(0).permutation(small.n_vars)].copy()
    assert np.array_equal(loaded.predict(shuffled).clusters, fitted.result_.clusters)


def test_models_saved_without_a_norm_option_load_as_post_ln(small, tmp_path):
    """pre- and post-LN share parameter names, so the saved option must decide; older files were post-LN."""
    import json

    post = CICL(n_clusters=5, seed=0, **{**SMALL, "n_epochs": 1, "norm": "post"}).fit(small)
    post.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "pybridge.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["norm"]
    meta_path.write_text(json.dumps(meta))
    loaded = CICL.load(tmp_path / "m", device="cpu", verbose=False)
    assert loaded.config.norm == "post"
    np.testing.assert_allclose(loaded.transform(small), post.result_.embedding, atol=1e-5)


@pytest.mark.parametrize(
    "variant",
    [
        dict(attention="batch"),
        dict(pseudo_labels="batch"),
        dict(instance_loss="infonce", cluster_loss="fne"),
        dict(augmentation="code"),
        dict(lam=0.0),
        dict(batch_size=64),
        dict(norm="post"),
        dict(norm="pre"),
        dict(norm="none"),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()),
)
def test_variants_train_and_give_valid_clusters(small, variant):
    model = CICL(n_clusters=5, seed=0, **{**SMALL, "n_epochs": 2, **variant}).fit(small)
    res = model.result_
    assert np.isfinite(model.history_["loss"]).all()
    assert res.clusters.min() >= 0 and res.clusters.max() < 5
    np.testing.assert_allclose(res.probabilities.sum(1), 1.0, atol=1e-5)
    if variant.get("batch_size") == 64:
        assert model.fit_info_["steps"] == 2 * (small.n_obs // 64)


def test_device_is_used_consistently(small):
    model = CICL(n_clusters=5, seed=0, **SMALL).fit(small)
    assert {p.device.type for p in model.encoder_.parameters()} == {"cpu"}
    assert model.centers_.device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            CICL(n_clusters=5, **{**SMALL, "device": "cuda"})
        return
    gpu = CICL(n_clusters=5, seed=0, **{**SMALL, "device": "cuda"}).fit(small)
    assert {p.device.type for p in gpu.encoder_.parameters()} == {"cuda"}
    assert gpu.result_.embedding.shape == model.result_.embedding.shape


# ----------------------------------------------------------------------------- API
def test_public_function_and_registry(small):
    info = get_method("cicl")
    assert (info.kind, info.reference, info.estimator, info.compute) == ("clustering", "none", CICL, compute_cicl)
    a = small.copy()
    out = pybridge.cicl(a, n_clusters=5, key_added="cc", seed=0, copy=True, **{k: v for k, v in SMALL.items()})
    assert "cc" not in a.obs and "cc" in out.obs and "X_cc" in out.obsm and "cc_confidence" in out.obs
    res = compute_cicl(small, n_clusters=5, seed=0, **SMALL)
    assert np.array_equal(res.clusters.astype(str), out.obs["cc"].astype(str).to_numpy())
    assert res.params["timings"]["total_s"] > 0
    assert pybridge.cicl(a, n_clusters=5, seed=0, **SMALL) is None and "cicl" in a.obs


def test_bad_inputs(small):
    with pytest.raises(ValueError, match="at least 2"):
        CICL(n_clusters=1)
    with pytest.raises(ValueError, match="integer"):
        CICL(n_clusters=2.5)
    with pytest.raises(TypeError, match="Unknown CICLConfig option"):
        CICL(n_cluster=3)
    with pytest.raises(ValueError, match="attention"):
        CICL(attention="genes")
    with pytest.raises(ValueError, match="k_min"):
        CICL(k_min=5, k_max=3)
    with pytest.raises(ValueError, match="no reference"):
        compute_cicl(small, reference=small, n_clusters=3, **SMALL)
    with pytest.raises(ValueError, match="smaller than the number of cells"):
        CICL(n_clusters=small.n_obs, **SMALL).fit(small)
    neg = small.copy()
    neg.X = small.X.toarray()
    neg.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        CICL(n_clusters=3, **SMALL).fit(neg)
    nan = small.copy()
    nan.X = small.X.toarray()
    nan.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CICL(n_clusters=3, **SMALL).fit(nan)
    with pytest.raises(ValueError, match="Layer 'counts'"):
        CICL(n_clusters=3, **SMALL).fit(small, layer="counts")
    with pytest.raises(ValueError, match="at least 10 cells"):
        CICL(n_clusters=2, **SMALL).fit(small[:5].copy())
    empty = ad.AnnData(sp.csr_matrix((20, 30), dtype=np.float32))
    with pytest.raises(ValueError, match="counts"):
        CICL(n_clusters=2, **SMALL).fit(empty)
    with pytest.raises(RuntimeError, match="not fitted"):
        CICL().predict(small)


# ----------------------------------------------------------------------------- real data
def test_estimated_k_on_cellbench_five_cell_lines(cellbench):
    """The K estimator finds the 5 cell lines of the CellBench plate (measured: 5)."""
    model = CICL(seed=0, **{**SMALL, "n_epochs": 1, "n_top_genes": 500}).fit(cellbench)
    assert model.n_clusters_ == 5
    assert model.result_.params["training"]["n_clusters_estimated"]
    scores = model.k_scores_
    assert max(scores, key=scores.get) == 5


@pytest.mark.slow
def test_cellbench_accuracy_paper_network(cellbench):
    """Paper-sized network (4 layers, 500 HVGs), 10 epochs: ARI on the 5 cell lines (measured 0.93)."""
    y = cellbench.obs["cell_type"].astype(str).to_numpy()
    res = compute_cicl(cellbench, n_clusters=5, seed=0, device="cpu", verbose=False, n_epochs=10)
    assert res.embedding.shape == (cellbench.n_obs, 500)
    assert adjusted_rand_score(y, res.clusters) >= 0.85


# ----------------------------------------------------------------------------- R parity
@pytest.mark.r
def test_runcicl_through_rpy2_matches_python(small, r_session):
    """RunCICL on a Seurat object (Python hosts R via rpy2) gives the clusters, scores and embedding of compute_cicl."""
    import anndata2ri
    from rpy2.robjects.conversion import localconverter

    ro = r_session
    a = ad.AnnData(small.X.copy(), obs=small.obs[["cell_type"]].copy(), var=pd.DataFrame(index=small.var_names))
    with localconverter(anndata2ri.converter):
        ro.globalenv["cicl_sce"] = a
    opts = {k: v for k, v in SMALL.items() if k not in ("verbose", "device")}
    r_opts = ", ".join(f"{k} = {v}" for k, v in opts.items())
    ro.r(
        f"""
        suppressPackageStartupMessages({{library(pybridge); library(SeuratObject); library(SingleCellExperiment)}})
        cicl_seu <- CreateSeuratObject(counts = as(assay(cicl_sce, "X"), "CsparseMatrix"),
                                       meta.data = as.data.frame(colData(cicl_sce)))
        cicl_out <- RunCICL(cicl_seu, n.clusters = 5, seed = 0, device = "cpu", verbose = FALSE, {r_opts})
        """
    )
    res = compute_cicl(small, n_clusters=5, seed=0, **SMALL)
    assert list(ro.r("as.character(cicl_out$cicl.clusters)")) == res.clusters.astype(str).tolist()
    np.testing.assert_allclose(np.asarray(ro.r("as.numeric(cicl_out$cicl.clusters.score)")), res.confidence, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ro.r('Embeddings(cicl_out, "cicl")')), res.embedding, atol=1e-5)
