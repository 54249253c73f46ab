#' Annotate cells with scNym
#'
#' Transfers cell type labels from a labelled reference to the cells of
#' `object` with scNym (Kimmel & Kelley, Genome Research 2021): a neural
#' network trained on the reference with MixMatch semi-supervision and a domain
#' adversary, using the query as unlabelled data. The computation runs in the
#' Python package pybridge (PyTorch, CPU or CUDA); R receives plain vectors and
#' matrices and writes them into the object.
#'
#' Both objects must hold raw counts (Seurat: the `counts` layer of `assay`;
#' SingleCellExperiment: the assay named `assay`, default `"counts"`); scNym
#' normalises them itself (log CPM). Genes are matched by name. With the same
#' `seed`, results on the CPU are identical run to run, and identical to the
#' Python API's (`pybridge.scnym()`), on the same machine: another CPU (AVX2
#' rather than AVX-512, say) sums in another order, and a few labels can differ.
#'
#' @section Output:
#' The returned object is the input with, and only with:
#' * cell metadata (`meta.data` / `colData`): `predicted.<name>` (factor of the
#'   reference's class names, verbatim, plus `"Unassigned"` when rejection is
#'   on), `predicted.<name>.score` (the top probability, in \[0, 1\]) and, with
#'   rejection, `predicted.<name>.raw` (the label before rejection);
#' * the scNym embedding (penultimate layer): reduction `<name>` (Seurat) or
#'   `reducedDim(object, toupper(<name>))` (SCE);
#' * per-class probabilities: assay `prediction.score.<name>` (Seurat; feature
#'   names are the classes with `_` turned into `-`, the verbatim class names
#'   are in the assay's feature metadata column `class`) or
#'   `metadata(object)$pybridge[[<name>]]$probabilities` (SCE; cells x classes);
#' * the parameters, versions, gene overlap and timings: the command log entry
#'   `RunScNym.<name>` (Seurat, see `SeuratObject::Command()`) or
#'   `metadata(object)$pybridge[[<name>]]$params` (SCE).
#'
#' Running again with the same `name` replaces these results; if another method
#' (or anything else) already uses one of these names, `RunScNym()` stops with
#' an error instead of overwriting.
#'
#' @section Backends:
#' From an R session pybridge starts Python with reticulate (see
#' [use_pybridge()]) and sends the counts as a sparse `dgCMatrix`. When R itself
#' runs inside Python (rpy2), pybridge does not use reticulate: the Python
#' module `pybridge.r` registers a callback and the objects are converted with
#' anndata2ri in Python. `options(pybridge.converter = "anndata2ri")` asks for
#' anndata2ri in an R session too; it needs reticulate >= 1.31 and otherwise
#' falls back to the `dgCMatrix` path.
#'
#' @param object A Seurat object or a SingleCellExperiment (the query).
#' @param reference The labelled reference: a Seurat object, a
#'   SingleCellExperiment, the path of an `.h5ad` or `.rds` file, or a model
#'   trained with [TrainScNym()] (its return value or its directory); a saved
#'   model is applied without retraining.
#' @param labels The reference's cell metadata column with the cell types.
#' @param assay The query's assay with raw counts (Seurat: an assay name,
#'   default the default assay; SCE: an assay name, default `"counts"`).
#' @param reference.assay The same for the reference object.
#' @param layer Seurat only: the layer(s) of `assay` with the raw counts.
#'   `NULL` (the default) reads the `counts` layer or, when the counts are
#'   split into layers (`counts.1`, `counts.2`, ... after `split()` or
#'   `merge()` on Seurat 5), all of them, put together in the object's cell
#'   order (genes a layer lacks are zeros; the object is not changed, no
#'   `JoinLayers()` needed). A name reads that layer, or the layers split from
#'   it (`<name>.*`); several names read those layers together. Without
#'   `assay` and `layer`, a default assay that holds no raw counts (normalised
#'   data only, or an `SCTAssay`'s corrected counts) is passed over for the
#'   RNA assay's counts, with a message; pybridge never trains on corrected or
#'   log-normalised values.
#' @param reference.layer The same for a Seurat reference.
#' @param name Name of the outputs (see Output).
#' @param seed Random seed for every stochastic step.
#' @param device `"auto"` (CUDA when available), `"cpu"` or `"cuda"`.
#' @param verbose Show messages and a progress bar.
#' @param ... scNym options (see `pybridge.ScNymConfig` and `pybridge.ScNym.fit()` in Python),
#'   with `_` or `.` in their names, e.g.:
#'   * `n_epochs`: training epochs (early stopping may end training sooner);
#'   * `discovery` (default `TRUE`, as the authors' `scnym_api()`): "new cell
#'     type discovery" mode, in which only query cells predicted with
#'     confidence >= 0.9 shape the training, so that cells of a type the
#'     reference lacks stay apart;
#'   * `reject`: label cells that match no reference type `"Unassigned"`. In
#'     discovery mode the rule is the distance to the nearest reference cells
#'     in the embedding (`reject.score = "distance"`); with `discovery = FALSE`
#'     it is a per-class confidence threshold set on validation cells, which is
#'     strict when the reference has few cells per type; `min.confidence = 0.5`
#'     without `reject` is the milder rule;
#'   * `n_top_genes`: train on the genes among the `n_top_genes` most variable
#'     of the reference or of the query (by normalised dispersion;
#'     `top.genes.flavor = "seurat_v3"` ranks as `FindVariableFeatures()`'s
#'     "vst" does) instead of every shared gene; `discovery = FALSE,
#'     n_top_genes = 2000` suits a query that holds only the reference's types,
#'     in other proportions;
#'   * `domain_key`: a cell metadata column of the reference naming each cell's
#'     batch or technology; each value becomes its own domain for the adversary
#'     (query cells form one more domain, or one per value when the query has
#'     the column too).
#'
#'   What these settings gave on real data (accuracy, rejection of types the
#'   reference lacks, run time) is in `docs/methods/scnym.md` of the source
#'   repository.
#' @return `object` with the results added.
#' @seealso [TrainScNym()], [use_pybridge()]
#' @rdname RunScNym
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   query <- subset(seu, tech == "indrop")
#'   ref <- subset(seu, tech != "indrop")
#'   query <- RunScNym(query, ref, labels = "cell_type", n_epochs = 10)
#'   table(query$predicted.scnym, query$cell_type)
#' }
#' }
#' @export
RunScNym.Seurat <- function(object, reference, labels = "cell_type", assay = NULL, name = "scnym", seed = 0,
                            device = "auto", verbose = TRUE, reference.assay = NULL, layer = NULL,
                            reference.layer = NULL, ...) {
  .run_annotation(object, reference, method = "scnym", fn = "RunScNym", labels = labels, assay = assay,
                  reference.assay = reference.assay, name = name, seed = seed, device = device, verbose = verbose,
                  layer = layer, reference.layer = reference.layer, options = list(...), call = sys.call(),
                  reserved = c("labels", "assay", "name", "seed", "device", "verbose", "reference.assay"))
}

#' @rdname RunScNym
#' @export
RunScNym.SingleCellExperiment <- RunScNym.Seurat

#' Train an scNym model once, annotate many queries
#'
#' Trains scNym on a labelled reference and saves it (weights in safetensors,
#' metadata in JSON) to the directory `path`. Pass the result, or the
#' directory, as `reference` to [RunScNym()] to annotate queries without
#' retraining. With a `query`, training is semi-supervised and adversarial on
#' that query (as `RunScNym()` does); without one, the model is a supervised
#' classifier that generalises to any query with the same genes.
#'
#' @param reference The labelled reference: a Seurat object, a
#'   SingleCellExperiment, or the path of an `.h5ad` or `.rds` file.
#' @param labels The reference's cell metadata column with the cell types.
#' @param path Directory to save the model in (created if needed; default: a
#'   temporary directory).
#' @param query Optional unlabelled query (Seurat or SCE) used during training.
#' @param assay,query.assay Assays with raw counts of the reference and the query.
#' @param layer,query.layer Seurat layer(s) with the raw counts of the
#'   reference and the query (see `layer` in [RunScNym()]).
#' @inheritParams RunScNym
#' @return A `pybridge_model` (its `path`, `method`, `classes`, `n_genes` and
#'   training `params`).
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   ref <- subset(seu, tech != "indrop")
#'   model <- TrainScNym(ref, labels = "cell_type", path = file.path(tempdir(), "panc8-scnym"), n_epochs = 10)
#'   model
#'   # annotate any number of queries without retraining: pass the model or its directory
#'   q1 <- RunScNym(subset(seu, tech == "indrop"), model)
#'   q2 <- RunScNym(subset(seu, tech == "celseq"), model$path)
#' }
#' }
#' @export
TrainScNym <- function(reference, labels = "cell_type", path = NULL, query = NULL, assay = NULL, query.assay = NULL,
                       seed = 0, device = "auto", verbose = TRUE, layer = NULL, query.layer = NULL, ...) {
  .run_training(reference, method = "scnym", fn = "TrainScNym", labels = labels, path = path, query = query,
                assay = assay, query.assay = query.assay, seed = seed, device = device, verbose = verbose,
                layer = layer, query.layer = query.layer, options = list(...),
                reserved = c("labels", "assay", "query.assay", "seed", "device", "verbose"))
}
