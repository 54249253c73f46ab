# RunScNym on real data (panc8_small, inDrop query vs four other technologies):
# what is written, with which types, and that nothing else changes.
skip_if_no_objects()

test_that("Seurat: labels, scores, embedding, probabilities and the command log, with real accuracy", {
  skip_if_no_python()
  out <- seurat_result()
  pred <- out$predicted.scnym
  expect_s3_class(pred, "factor")
  expect_identical(levels(pred), ref_classes)             # the reference's classes, verbatim, no rejection level
  expect_type(out$predicted.scnym.score, "double")
  expect_true(all(out$predicted.scnym.score >= 0 & out$predicted.scnym.score <= 1))
  expect_false("predicted.scnym.raw" %in% colnames(out[[]]))  # no rejection by default
  expect_gte(accuracy(pred, truth), 0.85)                 # measured 0.94 with 15 epochs

  probs <- layer_of(out, "data", assay = "prediction.score.scnym")
  expect_identical(colnames(probs), colnames(seu_query))
  expect_equal(unname(colSums(as.matrix(probs))), rep(1, ncol(out)), tolerance = 1e-5)
  # the score is the top probability and the label its class
  expect_equal(unname(apply(as.matrix(probs), 2, max)), unname(out$predicted.scnym.score), tolerance = 1e-6)
  cls <- out[["prediction.score.scnym"]][[]]$class
  expect_identical(cls, ref_classes)
  expect_identical(as.character(pred), unname(cls[apply(as.matrix(probs), 2, which.max)]))

  emb <- Embeddings(out, "scnym")
  expect_identical(dim(emb), c(ncol(out), 256L))
  expect_identical(rownames(emb), colnames(out))
  expect_identical(Key(out[["scnym"]]), "scnym_")

  cmd <- Command(out, "RunScNym.scnym")
  expect_s4_class(cmd, "SeuratCommand")
  expect_identical(cmd@params$method, "scnym")
  expect_identical(cmd@params$labels, "cell_type")
  expect_identical(cmd@params$config$n_epochs, EPOCHS)
  expect_identical(cmd@params$r_bridge$backend, "reticulate")
  expect_identical(cmd@params$gene_overlap$n_shared, nrow(seu_query))
  expect_match(cmd@call.string, "^RunScNym\\(")
})

test_that("Seurat: the returned object is otherwise identical to the input", {
  skip_if_no_python()
  out <- seurat_result()
  expect_identical(strip_seurat(out), seu_query)
  expect_identical(DefaultAssay(out), DefaultAssay(seu_query))
})

test_that("SingleCellExperiment: colData, reducedDim and metadata, and identical labels to the Seurat path", {
  skip_if_no_python()
  out <- sce_result()
  expect_s3_class(out$predicted.scnym, "factor")
  expect_identical(levels(out$predicted.scnym), ref_classes)
  expect_type(out$predicted.scnym.score, "double")
  expect_identical(dim(reducedDim(out, "SCNYM")), c(ncol(out), 256L))
  rec <- S4Vectors::metadata(out)$pybridge$scnym
  expect_identical(rec$method, "scnym")
  expect_identical(colnames(rec$probabilities), ref_classes)
  expect_identical(rownames(rec$probabilities), colnames(sce_query))
  expect_equal(unname(rowSums(rec$probabilities)), rep(1, ncol(out)), tolerance = 1e-5)
  expect_equal(unname(apply(rec$probabilities, 1, max)), out$predicted.scnym.score, tolerance = 1e-6)
  expect_identical(rec$params$config$n_epochs, EPOCHS)
  # same data, same seed: the same labels and scores through either container
  seu_out <- seurat_result()
  expect_identical(as.character(out$predicted.scnym), as.character(seu_out$predicted.scnym))
  expect_equal(out$predicted.scnym.score, unname(seu_out$predicted.scnym.score), tolerance = 1e-12)
})

test_that("SingleCellExperiment: the returned object is otherwise identical to the input", {
  skip_if_no_python()
  out <- sce_result()
  expect_identical(strip_sce(out), sce_query)
})

test_that("class names reach the object verbatim (never make.names)", {
  skip_if_no_python()
  odd <- c(acinar = "acinar cell", alpha = "alpha_cell (GCG+)", beta = "beta-cell", delta = "1 delta",
           ductal = "ductal/duct", endothelial = "endothelial.x")
  ref <- sce_ref
  ref$odd_type <- unname(odd[as.character(ref$cell_type)])
  out <- RunScNym(sce_query, ref, labels = "odd_type", n_epochs = 3, device = "cpu", verbose = FALSE)
  expect_identical(levels(out$predicted.scnym), sort(unname(odd)))
  expect_identical(colnames(S4Vectors::metadata(out)$pybridge$scnym$probabilities), sort(unname(odd)))
  seu_ref2 <- seu_ref
  seu_ref2$odd_type <- unname(odd[as.character(seu_ref2$cell_type)])
  out2 <- RunScNym(seu_query, seu_ref2, labels = "odd_type", n_epochs = 3, device = "cpu", verbose = FALSE)
  expect_identical(levels(out2$predicted.scnym), sort(unname(odd)))
  expect_identical(out2[["prediction.score.scnym"]][[]]$class, sort(unname(odd)))
  expect_identical(as.character(out2$predicted.scnym), as.character(out$predicted.scnym))
})

test_that("reference cells with a missing label (NA) are left out of training, not made a class \"NA\"", {
  skip_if_no_python()
  for (ref in list(seu_ref, sce_ref)) {
    ref$with_na <- as.character(ref$cell_type)  # character: reticulate would send NA as the string "NA"
    ref$with_na[c(1, 5, 9)] <- NA
    expect_warning(
      out <- RunScNym(sce_query, ref, labels = "with_na", n_epochs = 3, device = "cpu", verbose = FALSE),
      "3 reference cells have no label \\(NA or empty\\)"
    )
    expect_identical(levels(out$predicted.scnym), ref_classes)
    expect_false(anyNA(out$predicted.scnym))
  }
})

test_that("reference as a saved model: train once, annotate by object or by directory, same labels", {
  skip_if_no_python()
  model <- trained_model()
  expect_s3_class(model, "pybridge_model")
  expect_identical(model$classes, ref_classes)
  expect_identical(model$n_genes, nrow(seu_ref))
  expect_true(file.exists(file.path(model$path, "model.safetensors")))
  expect_output(print(model), "pybridge scnym model: 6 classes, 2000 genes")

  a <- RunScNym(seu_query, model, verbose = FALSE)
  b <- RunScNym(sce_query, model_dir, verbose = FALSE)
  c <- RunScNym(seu_query, read_pybridge_model(model_dir), verbose = FALSE)
  expect_identical(as.character(a$predicted.scnym), as.character(b$predicted.scnym))
  expect_identical(a$predicted.scnym, c$predicted.scnym)
  expect_true(all(as.character(a$predicted.scnym) %in% ref_classes))
  # trained without the query (supervised only): still well above chance (6 classes)
  expect_gte(accuracy(a$predicted.scnym, truth), 0.7)
  expect_match(Command(a, "RunScNym.scnym")@params$reference, "^model: ")
})

test_that("reference as an .h5ad path", {
  skip_if_no_python()
  skip_if_not_installed("reticulate")
  path <- withr::local_tempfile(fileext = ".h5ad")
  # write the reference with the Python side (test-only: R hosts Python here)
  ad <- reticulate::import("anndata", convert = FALSE)
  sp <- reticulate::import("scipy.sparse", convert = FALSE)
  pd <- reticulate::import("pandas", convert = FALSE)
  counts <- counts_of(seu_ref)
  obs <- pd$DataFrame(list(cell_type = as.character(seu_ref$cell_type)), index = colnames(seu_ref))
  var <- pd$DataFrame(index = rownames(seu_ref))
  X <- sp$csr_matrix(sp$csc_matrix(counts)$T)
  ad$AnnData(X = X, obs = obs, var = var)$write_h5ad(path)

  out <- RunScNym(seu_query, path, n_epochs = EPOCHS, device = "cpu", verbose = FALSE)
  # the same reference data as the object: the same labels
  expect_identical(as.character(out$predicted.scnym), as.character(seurat_result()$predicted.scnym))
  expect_match(Command(out, "RunScNym.scnym")@params$reference, "^h5ad: ")
})

test_that("rejection adds the raw label and an Unassigned level", {
  skip_if_no_python()
  out <- RunScNym(sce_query, sce_ref, n_epochs = 3, reject = TRUE, min.confidence = 0.9, device = "cpu",
                  verbose = FALSE)
  expect_identical(levels(out$predicted.scnym), c(ref_classes, "Unassigned"))
  expect_identical(levels(out$predicted.scnym.raw), ref_classes)
  low <- out$predicted.scnym.score < 0.9
  expect_true(any(low))
  expect_true(all(out$predicted.scnym[low] == "Unassigned"))
  kept <- out$predicted.scnym != "Unassigned"
  expect_identical(as.character(out$predicted.scnym[kept]), as.character(out$predicted.scnym.raw[kept]))
  expect_true(S4Vectors::metadata(out)$pybridge$scnym$params$config$reject)
})

test_that("domain_key: each reference technology is its own domain for the adversary; a missing column is an error", {
  skip_if_no_python()
  out <- RunScNym(seu_query, seu_ref, domain_key = "tech", n_epochs = 3, device = "cpu", verbose = FALSE)
  training <- Command(out, "RunScNym.scnym")@params$training
  # the four reference technologies, then the query's own (inDrop is not a reference domain)
  expect_setequal(unlist(training$domains), c(setdiff(levels(droplevels(seu_ref$tech)), "indrop"), "indrop"))
  expect_length(unlist(training$domains), 5L)
  expect_true(training$adversarial)
  expect_identical(strip_seurat(out), seu_query)
  expect_error(RunScNym(seu_query, seu_ref, domain_key = "protocol", n_epochs = 3, device = "cpu", verbose = FALSE),
               "domain_key='protocol' is not a column of the reference")
  # TrainScNym hands domain_key to the fit as well (it is not a config option)
  path <- file.path(withr::local_tempdir(), "m")
  TrainScNym(seu_ref, path = path, query = seu_query, domain_key = "tech", n_epochs = 3, device = "cpu",
             verbose = FALSE)
  meta <- jsonlite::fromJSON(file.path(path, "pybridge.json"))
  expect_length(meta$domains, 5L)
})

test_that("another name leaves earlier results untouched; the same name and method replaces them", {
  skip_if_no_python()
  first <- seurat_result()
  second <- RunScNym(first, seu_ref, name = "nym2", n_epochs = 3, device = "cpu", verbose = FALSE)
  expect_identical(second$predicted.scnym, first$predicted.scnym)
  expect_identical(Embeddings(second, "scnym"), Embeddings(first, "scnym"))
  expect_true(all(c("predicted.nym2", "predicted.nym2.score") %in% colnames(second[[]])))
  expect_true(all(c("RunScNym.scnym", "RunScNym.nym2") %in% Command(second)))
  expect_identical(strip_seurat(second, "nym2"), first)

  again <- RunScNym(second, seu_ref, name = "nym2", n_epochs = 3, seed = 1, device = "cpu", verbose = FALSE)
  expect_identical(sum(Command(again) == "RunScNym.nym2"), 1L)
  expect_identical(Command(again, "RunScNym.nym2")@params$seed, 1L)
  expect_identical(colnames(again[[]]), colnames(second[[]]))
})

test_that("Python warnings come back as R warnings (low gene overlap with a saved model)", {
  skip_if_no_python()
  trained_model()
  keep <- rownames(sce_query)[seq_len(600)]  # 30% of the model's genes
  expect_warning(
    out <- RunScNym(sce_query[keep, ], model_dir, verbose = FALSE),
    "Only 600 of 2000 model genes"
  )
  expect_identical(ncol(out), ncol(sce_query))
  expect_identical(S4Vectors::metadata(out)$pybridge$scnym$params$gene_overlap$n_shared, 600L)
})

test_that("asking for anndata2ri in an R session falls back to the dgCMatrix path where unsafe, without crashing", {
  skip_if_no_python()
  skip_if(pybridge:::.anndata2ri_safe(), "reticulate >= 1.31: the anndata2ri path is allowed here")
  withr::local_options(pybridge.converter = "anndata2ri")
  env <- pybridge:::.pybridge
  env$warned_converter <- NULL
  expect_message(
    out <- RunScNym(sce_query, sce_ref, n_epochs = 1, device = "cpu", verbose = FALSE),
    "needs reticulate >= 1.31"
  )
  bridge <- S4Vectors::metadata(out)$pybridge$scnym$params$r_bridge
  expect_identical(bridge$backend, "reticulate")
  expect_identical(bridge$converter, "sparse")
  expect_identical(levels(out$predicted.scnym), ref_classes)
})

test_that("torch is loaded on its own BLAS, not R's (Linux)", {
  skip_if_no_python()
  skip_if(Sys.info()[["sysname"]] != "Linux", "RTLD_DEEPBIND is Linux-only")
  seurat_result()  # starts Python through pybridge
  # FALSE would mean torch's matrix products run in R's libblas (1.3-2.5x slower with OpenBLAS, see
  # benchmarks/results_r_overhead.md), e.g. because something imported torch before pybridge did
  expect_true(isTRUE(pybridge:::.pybridge$torch_isolated))
})
