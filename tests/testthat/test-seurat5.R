# Seurat 5 objects natively: Assay5 layers, counts split into layers (split(), merge()), the `layer`
# arguments, assays without raw counts (normalised data only, SCTransform), v3/v4 assays on Seurat 5, and
# the results as Seurat 5 users read them. Each case compares with the same cells in one joined counts layer
# (same seed, same options) and checks that the object is otherwise unchanged and that no warning shows.
# Needs SeuratObject >= 5: it runs in the trixie lane (bash scripts/lane.sh -- Rscript -e ...), not on
# Debian bookworm (SeuratObject 4.1.3, no layers).
skip_if_no_objects()
if (!seurat_v5) {
  skip(paste0("needs Seurat 5 (SeuratObject >= 5; this is SeuratObject ", utils::packageVersion("SeuratObject"),
              ", Debian bookworm's): runs in the trixie lane, bash scripts/lane.sh"))
}

# small settings: properties and equalities, not accuracy
SCNYM_FAST <- list(n_epochs = 3, min_epochs = 1, n_hidden = 64, device = "cpu", verbose = FALSE)
JIND_FAST <- list(n_epochs = 3, gan_epochs = 1, gan_min_steps = 1, gan_stop = "epochs", n_top_genes = 500,
                  n_latent = 16, n_hidden = 32, gan_hidden = 16, device = "cpu", verbose = FALSE)
CICL_FAST <- list(n.clusters = 4, n_top_genes = 200, n_layers = 1, head_dim = 16, ffn_dim = 32, proj_hidden = 32,
                  proj_dim = 16, n_epochs = 1, kmeans_n_init = 1, kmeans_n_init_train = 1, device = "cpu",
                  verbose = FALSE)
SCORES <- c("predicted.scnym", "predicted.scnym.score")

# A Seurat object of the panc8 counts with a v5 (Assay5) or v3 ("Assay") RNA assay.
make_seurat <- function(counts, meta, version = "v5") {
  withr::with_options(list(Seurat.object.assay.version = version),
                      SeuratObject::CreateSeuratObject(counts, meta.data = meta))
}
v5 <- make_seurat(counts_of(demo), demo[[c("tech", "cell_type")]])
q5 <- subset(v5, tech == "indrop")
r5 <- subset(v5, tech != "indrop")
split_rna <- function(x, f) {
  x[["RNA"]] <- split(x[["RNA"]], f = f)
  x
}
# SeuratObject 5.0.2's split() and LayerData<- cannot make a one-cell layer (they drop its matrix to a
# vector), though Assay5 objects can hold one: move `cell` from layer `from` into a layer of its own, `to`
# (test-only slot access).
one_cell_layer <- function(x, cell, from, to) {
  a <- x[["RNA"]]
  m <- SeuratObject::LayerData(a, layer = from)
  a@layers[[from]] <- m[, colnames(m) != cell, drop = FALSE]
  a@layers[[to]] <- m[, cell, drop = FALSE]
  a@cells[[from]] <- setdiff(colnames(m), cell)
  a@cells[[to]] <- cell
  a@features[[to]] <- rownames(m)
  methods::validObject(a)
  x[["RNA"]] <- a
  x
}
# the query in three layers: 'a' and 'b' interleave (the layers put together are not in Cells() order) and
# 'c' holds a single cell
q_groups <- rep(c("a", "b"), length.out = ncol(q5))
q_split <- one_cell_layer(split_rna(q5, q_groups), colnames(q5)[38], "counts.b", "counts.c")
q_groups[38] <- "c"
# the reference in three layers by technology
r_split <- split_rna(r5, ifelse(r5$tech %in% c("celseq", "celseq2"), "celseq", as.character(r5$tech)))

# Evaluate `expr`, collecting its warnings; expect none, return its value.
without_warnings <- function(expr) {
  seen <- character()
  value <- withCallingHandlers(expr, warning = function(w) {
    seen <<- c(seen, conditionMessage(w))
    invokeRestart("muffleWarning")
  })
  testthat::expect_identical(seen, character())
  value
}
run <- function(fn, object, reference = NULL, ..., opts = SCNYM_FAST) {
  args <- c(list(object), if (!is.null(reference)) list(reference), list(...), opts)
  without_warnings(do.call(fn, args))
}
# labels, scores and cell order, the embedding and the per-class scores are those of `base`
expect_same_annotation <- function(out, base, name = "scnym") {
  cols <- paste0("predicted.", name, c("", ".score"))
  testthat::expect_identical(colnames(out), colnames(base))
  testthat::expect_identical(out[[]][cols], base[[]][cols])
  if (name %in% SeuratObject::Reductions(base)) {
    testthat::expect_equal(SeuratObject::Embeddings(out, name), SeuratObject::Embeddings(base, name))
  }
  assay <- paste0("prediction.score.", name)
  testthat::expect_equal(SeuratObject::LayerData(out, assay = assay, layer = "data"),
               SeuratObject::LayerData(base, assay = assay, layer = "data"))
}
base_scnym <- function() run_once("v5-scnym", run("RunScNym", q5, r5))

test_that("an Assay5 with a counts layer is read with LayerData(); nothing else changes and no warning shows", {
  got <- pybridge:::.extract(q5, what = "query")
  expect_identical(got$counts, SeuratObject::LayerData(q5, layer = "counts"))
  expect_identical(got$layers, "counts")
  skip_if_no_python()
  out <- base_scnym()  # (run() checks that no warning showed)
  expect_identical(strip_seurat(out), q5)
  expect_identical(Command(out, "RunScNym.scnym")@params$layer, "counts")
  expect_gt(accuracy(out$predicted.scnym, q5$cell_type), 0.3)
})

test_that("a non-default active assay and several assays: assay = NULL reads the active one, assay = another", {
  skip_if_no_python()
  # RNA holds the counts with the gene names shuffled, ALT the real ones
  fake <- counts_of(q5)
  rownames(fake) <- sample(rownames(fake))
  fake <- fake[rownames(counts_of(q5)), ]
  multi <- q5
  multi[["ALT"]] <- SeuratObject::CreateAssay5Object(counts = counts_of(q5))
  multi[["RNA"]] <- SeuratObject::CreateAssay5Object(counts = fake)
  SeuratObject::DefaultAssay(multi) <- "ALT"
  expect_identical(pybridge:::.extract(multi)$assay, "ALT")
  out <- run("RunScNym", multi, r5)
  expect_same_annotation(out, base_scnym())
  expect_identical(Command(out, "RunScNym.scnym")@params$assay, "ALT")
  expect_identical(SeuratObject::DefaultAssay(out), "ALT")
  expect_identical(strip_seurat(out), multi)
  # the default assay RNA, the counts in ALT: assay = "ALT"
  SeuratObject::DefaultAssay(multi) <- "RNA"
  out <- run("RunScNym", multi, r5, assay = "ALT")
  expect_same_annotation(out, base_scnym())
  expect_identical(SeuratObject::DefaultAssay(out), "RNA")
  expect_identical(strip_seurat(out), multi)
})

test_that("counts split into layers (split()): read together in Cells() order, with a message, no JoinLayers()", {
  expect_identical(SeuratObject::Layers(q_split), c("counts.a", "counts.b", "counts.c"))
  expect_identical(ncol(SeuratObject::LayerData(q_split, layer = "counts.c")), 1L)
  expect_message(got <- pybridge:::.extract(q_split, what = "query", verbose = TRUE),
                 "split into 3 layers of assay 'RNA' \\('counts.a', 'counts.b', 'counts.c'\\).*100 cells")
  expect_identical(got$layers, c("counts.a", "counts.b", "counts.c"))
  expect_identical(dimnames(got$counts), dimnames(counts_of(q5)))
  expect_identical(as.matrix(got$counts), as.matrix(counts_of(q5)))
  expect_silent(pybridge:::.extract(q_split, what = "query", verbose = FALSE))
  skip_if_no_python()
  out <- run("RunScNym", q_split, r_split)
  expect_same_annotation(out, base_scnym())
  expect_identical(SeuratObject::Layers(out[["RNA"]]), SeuratObject::Layers(q_split))  # still split
  expect_identical(strip_seurat(out), q_split)
  expect_identical(Command(out, "RunScNym.scnym")@params$reference.layer, SeuratObject::Layers(r_split))
  expect_identical(Command(out, "RunScNym.scnym")@params$layer, c("counts.a", "counts.b", "counts.c"))
})

test_that("merge(): one layer per object, a layer that lacks genes has zeros; as after JoinLayers()", {
  odd <- seq(1, ncol(q5), by = 2)
  x <- q5[, odd]
  lacks <- rownames(q5)[1:150]
  y <- subset(q5[, -odd], features = setdiff(rownames(q5), lacks))  # y lacks 150 genes
  merged <- merge(y, x)  # cells: y's, then x's
  expect_identical(SeuratObject::Layers(merged), c("counts.1", "counts.2"))
  joined <- SeuratObject::JoinLayers(merged)
  got <- pybridge:::.extract(merged)
  expect_identical(dimnames(got$counts), dimnames(counts_of(joined)))
  expect_identical(as.matrix(got$counts), as.matrix(counts_of(joined)))
  expect_identical(sum(got$counts[lacks, colnames(y)]), 0)
  expect_identical(got$counts[lacks, colnames(x)], counts_of(q5)[lacks, colnames(x)])
  skip_if_no_python()
  out <- run("RunScNym", merged, r5)
  expect_same_annotation(out, run("RunScNym", joined, r5))
  expect_identical(strip_seurat(out), merged)
})

test_that("layer = names the layer(s) with the raw counts; a missing layer is an error that lists the layers", {
  with_raw <- function(x) {
    a <- SeuratObject::CreateAssay5Object(data = log1p(counts_of(x)))
    a$raw <- counts_of(x)
    suppressWarnings(x[["RNA"]] <- a)  # (SeuratObject warns that the assay has no 'counts' layer)
    x
  }
  q_raw <- with_raw(q5)
  r_raw <- with_raw(r5)
  expect_identical(SeuratObject::Layers(q_raw), c("data", "raw"))
  # no 'counts' layer, no other assay: the error says where raw counts may be
  expect_error(pybridge:::.extract(q_raw),
               paste0("Assay 'RNA' of the query holds no raw counts \\(no 'counts' layer; layers present: 'data', ",
                      "'raw'\\).*`layer =`"),
               class = "pybridge_input_error")
  expect_error(pybridge:::.extract(q_raw, layer = "nope"),
               paste0("Assay 'RNA' of the query has no layer 'nope' \\(nor layers 'nope.\\*' split from it\\); ",
                      "its layers: 'data', 'raw'"),
               class = "pybridge_input_error")
  expect_identical(pybridge:::.extract(q_raw, layer = "raw")$counts, counts_of(q5))
  expect_error(RunScNym(q5, r_raw, reference.layer = "nope", verbose = FALSE),
               "of the reference has no layer 'nope'.*Pass `reference.layer =`", class = "pybridge_input_error")
  expect_error(TrainScNym(r5, query = q_raw, query.layer = "nope", verbose = FALSE),
               "of the query has no layer 'nope'.*Pass `query.layer =`", class = "pybridge_input_error")
  expect_error(RunScNym(sce_query, sce_ref, layer = "counts", verbose = FALSE),
               "`layer` names layers of a Seurat assay; the query is a SingleCellExperiment",
               class = "pybridge_input_error")
  expect_error(RunScNym(q5, r5, layer = 1, verbose = FALSE), "`layer` must be NULL", class = "pybridge_input_error")
  # several names: those layers (here they leave a cell without counts)
  expect_error(pybridge:::.extract(q_split, layer = c("counts.a", "counts.b")),
               "hold no counts for 1 of its 100 cells", class = "pybridge_input_error")
  expect_identical(pybridge:::.extract(q_split, layer = c("counts.c", "counts.a", "counts.b"))$counts,
                   pybridge:::.extract(q_split)$counts)
  # split raw counts: layer = "raw" reads raw.1, raw.2
  raw_split <- q_raw
  m <- counts_of(q5)
  a <- SeuratObject::CreateAssay5Object(data = log1p(m))
  a$raw.1 <- m[, q_groups == "a"]
  a$raw.2 <- m[-(1:10), q_groups != "a"]
  suppressWarnings(raw_split[["RNA"]] <- a)
  got <- pybridge:::.extract(raw_split, layer = "raw")
  expect_identical(got$layers, c("raw.1", "raw.2"))
  expect_identical(as.matrix(got$counts[-(1:10), ]), as.matrix(m[-(1:10), ]))
  expect_identical(sum(got$counts[1:10, q_groups != "a"]), 0)
  skip_if_no_python()
  out <- run("RunScNym", q_raw, r_raw, layer = "raw", reference.layer = "raw")
  expect_same_annotation(out, base_scnym())
  expect_identical(strip_seurat(out), q_raw)
  expect_identical(Command(out, "RunScNym.scnym")@params$layer, "raw")
})

test_that("normalised data only or an SCTAssay: the RNA counts when there are, else an error; never corrected values", {
  # the default assay holds log-normalised data only: the RNA counts instead, with a message
  lognorm <- q5
  suppressWarnings(lognorm[["LOG"]] <- SeuratObject::CreateAssay5Object(data = log1p(counts_of(q5))))
  SeuratObject::DefaultAssay(lognorm) <- "LOG"
  expect_message(got <- pybridge:::.extract(lognorm, verbose = TRUE),
                 "default assay 'LOG' of the query holds no raw counts.*reading the raw counts of assay 'RNA'")
  expect_identical(got$assay, "RNA")
  expect_identical(got$counts, counts_of(q5))
  # named explicitly, it is an error naming the assays with counts
  expect_error(pybridge:::.extract(lognorm, assay = "LOG"),
               paste0("Assay 'LOG' of the query holds no raw counts.*never trains on corrected or log-normalised ",
                      "values.*assays with a counts layer: 'RNA'"),
               class = "pybridge_input_error")
  # without any raw counts
  only_log <- suppressWarnings(SeuratObject::CreateSeuratObject(
    SeuratObject::CreateAssay5Object(data = log1p(counts_of(q5))), assay = "LOG"))
  expect_error(pybridge:::.extract(only_log),
               paste0("Assay 'LOG' of the query holds no raw counts.*uses the default assay, 'LOG'.*pybridge needs ",
                      "raw counts.*`assay =`.*`layer =`"),
               class = "pybridge_input_error")
  skip_if_not_installed("Seurat")
  sct <- suppressWarnings(suppressMessages(Seurat::SCTransform(q5, verbose = FALSE)))
  expect_identical(SeuratObject::DefaultAssay(sct), "SCT")
  expect_message(got <- pybridge:::.extract(sct, verbose = TRUE),
                 "default assay 'SCT' of the query holds SCTransform-corrected values.*assay 'RNA' instead")
  expect_identical(got$counts, counts_of(q5))
  expect_error(pybridge:::.extract(sct, assay = "SCT"), "Assay 'SCT' of the query holds SCTransform-corrected",
               class = "pybridge_input_error")
  sct_only <- suppressWarnings(Seurat::DietSeurat(sct, assays = "SCT"))
  expect_error(RunScNym(sct_only, r5, verbose = FALSE),
               "Assay 'SCT' of the query holds SCTransform-corrected values.*pybridge needs raw counts",
               class = "pybridge_input_error")
  skip_if_no_python()
  out <- run("RunScNym", lognorm, r5)
  expect_same_annotation(out, base_scnym())
  expect_identical(Command(out, "RunScNym.scnym")@params$assay, "RNA")
  expect_identical(strip_seurat(out), lognorm)
})

test_that("v3/v4 assays on Seurat 5 (UpdateSeuratObject, assay version 'v3') and mixed with v5 ones", {
  v3 <- make_seurat(counts_of(demo), demo[[c("tech", "cell_type")]], version = "v3")
  expect_identical(as.character(class(v3[["RNA"]])), "Assay")
  q3 <- subset(v3, tech == "indrop")
  r3 <- subset(v3, tech != "indrop")
  expect_identical(pybridge:::.extract(q3)$counts, counts_of(q5))
  updated <- suppressMessages(SeuratObject::UpdateSeuratObject(demo))  # saved by SeuratObject 4
  expect_identical(as.character(class(updated[["RNA"]])), "Assay")
  skip_if_no_python()
  out <- run("RunScNym", subset(updated, tech == "indrop"), subset(updated, tech != "indrop"))
  expect_identical(out[[]][SCORES], base_scnym()[[]][SCORES])
  # a v5 query with a v3/v4 reference, and the reverse
  out <- run("RunScNym", q5, r3)
  expect_same_annotation(out, base_scnym())
  expect_identical(strip_seurat(out), q5)
  out <- run("RunScNym", q3, r5)
  expect_same_annotation(out, base_scnym())
  expect_identical(strip_seurat(out), q3)
})

test_that("results as Seurat 5 users read them: meta.data, FetchData, DimPlot/FeaturePlot/VlnPlot, the command log", {
  skip_if_no_python()
  skip_if_not_installed("Seurat")
  skip_if_not_installed("ggplot2")
  # a normalised object, as users have it (the plots read the default assay's 'data' layer)
  normalised <- Seurat::NormalizeData(q5, verbose = FALSE)
  out <- run("RunScNym", normalised, r5)
  expect_same_annotation(out, base_scnym())
  expect_identical(strip_seurat(out), normalised)
  expect_identical(setdiff(colnames(out[[]]), colnames(q5[[]])), SCORES)
  expect_s3_class(out$predicted.scnym, "factor")
  expect_identical(names(out$predicted.scnym), colnames(out))
  probs <- SeuratObject::LayerData(out, assay = "prediction.score.scnym", layer = "data")
  expect_identical(colnames(probs), colnames(out))
  expect_equal(unname(colSums(probs)), rep(1, ncol(out)), tolerance = 1e-5)
  expect_equal(unname(apply(probs, 2, max)), unname(out$predicted.scnym.score), tolerance = 1e-6)
  fetched <- without_warnings(SeuratObject::FetchData(out, vars = c(SCORES, "scnym_1", "predictionscorescnym_alpha")))
  expect_identical(rownames(fetched), colnames(out))
  expect_identical(fetched$predicted.scnym, unname(out$predicted.scnym))
  expect_identical(fetched$scnym_1, unname(SeuratObject::Embeddings(out, "scnym")[, 1]))
  expect_identical(fetched$predictionscorescnym_alpha, unname(probs["alpha", ]))
  # the plots Seurat users draw from these, built (not printed)
  plots <- without_warnings(c(
    Seurat::DimPlot(out, reduction = "scnym", group.by = "predicted.scnym", combine = FALSE),
    Seurat::FeaturePlot(out, features = c("predicted.scnym.score", "predictionscorescnym_alpha"),
                        reduction = "scnym", combine = FALSE),
    Seurat::VlnPlot(out, features = c("predicted.scnym.score", "predictionscorescnym_alpha"),
                    group.by = "predicted.scnym", combine = FALSE)
  ))
  expect_length(plots, 5L)
  for (p in plots) {
    expect_s3_class(p, "ggplot")
    built <- without_warnings(ggplot2::ggplot_build(p))
    expect_true(ncol(out) %in% vapply(built$data, nrow, 1L))  # a layer with one point per cell
  }
  cmd <- SeuratObject::Command(out, "RunScNym.scnym")
  expect_identical(cmd@assay.used, "RNA")
  expect_identical(cmd@params$method, "scnym")
  expect_identical(SeuratObject::Command(out, "RunScNym.scnym", "layer"), "counts")
  expect_identical(SeuratObject::DefaultAssay(out[["scnym"]]), "RNA")
})

test_that("SingleCellExperiment (1.28 in the lane): the same results, in colData, reducedDim and metadata", {
  skip_if_no_python()
  sq <- as_sce(q5)
  out <- run("RunScNym", sq, as_sce(r5))
  expect_identical(as.data.frame(colData(out))[SCORES], base_scnym()[[]][SCORES])
  expect_equal(unname(reducedDim(out, "SCNYM")), unname(SeuratObject::Embeddings(base_scnym(), "scnym")))
  rec <- S4Vectors::metadata(out)$pybridge$scnym
  expect_identical(rownames(rec$probabilities), colnames(sq))
  expect_identical(rec$params$method, "scnym")
  expect_identical(strip_sce(out), sq)
})

test_that("Train* on split layers (layer, query.layer), then Run* with the model on a split query", {
  skip_if_no_python()
  joined <- do.call(TrainScNym, c(list(r5, query = q5, path = withr::local_tempfile()), SCNYM_FAST))
  # (layer = "counts" is the default: the 'counts' layer, or the layers split from it)
  from_split <- without_warnings(do.call(TrainScNym, c(list(r_split, query = q_split, layer = "counts",
                                                            query.layer = "counts", path = withr::local_tempfile()),
                                                       SCNYM_FAST)))
  expect_identical(from_split$classes, joined$classes)
  a <- run("RunScNym", q_split, from_split, opts = list(device = "cpu", verbose = FALSE))
  b <- run("RunScNym", q5, joined, opts = list(device = "cpu", verbose = FALSE))
  expect_same_annotation(a, b)
  expect_identical(strip_seurat(a), q_split)
})

test_that("a real dataset (panc8) in three layers: RunScNym, RunJIND and RunCICL give the joined object's results", {
  skip_if_no_python()
  q3 <- split_rna(q5, paste0("part", seq_len(ncol(q5)) %% 3))
  expect_length(SeuratObject::Layers(q3), 3L)
  expect_length(SeuratObject::Layers(r_split), 3L)
  out <- run("RunScNym", q3, r_split)
  expect_same_annotation(out, base_scnym())
  expect_identical(strip_seurat(out), q3)
  jind <- run("RunJIND", q3, r_split, opts = JIND_FAST)
  jind_joined <- run("RunJIND", q5, r5, opts = JIND_FAST)
  expect_same_annotation(jind, jind_joined, name = "jind")
  expect_identical(jind[[]]["predicted.jind.raw"], jind_joined[[]]["predicted.jind.raw"])
  expect_identical(strip_seurat(jind, "jind", "RunJIND"), q3)
  cicl <- run("RunCICL", q3, opts = CICL_FAST)
  cicl_joined <- run("RunCICL", q5, opts = CICL_FAST)
  expect_identical(cicl[[]][c("cicl.clusters", "cicl.clusters.score")],
                   cicl_joined[[]][c("cicl.clusters", "cicl.clusters.score")])
})
