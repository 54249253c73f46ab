# The thin wrappers for the other methods share RunScNym's worker; these check
# what each writes (tiny configurations: properties, not accuracy, which the
# Python tests of each method cover).
skip_if_no_objects()

test_that("pybridge_methods() lists the registry: kinds, references, and trainable where R has a Train function", {
  skip_if_no_python()
  m <- run_once("methods", pybridge_methods())
  expect_identical(names(m), c("name", "kind", "reference", "trainable"))
  expect_setequal(m$name, unlist(pybridge:::.python_names))  # every registered method has an R Run function
  expect_identical(m$name[m$trainable], c("jind", "linear", "scnym"))
  # the record the tests use without Python (setup.R) is the real one
  real <- pybridge:::.methods_table()
  fake <- pybridge:::.parse_methods(fake_methods)
  expect_identical(real[match(fake$name, real$name), ], fake, ignore_attr = "row.names")
})

test_that("RunJIND writes labels with rejection, scores and the raw label", {
  method_available("jind")
  out <- RunJIND(seu_query, seu_ref, n_epochs = 3, gan_epochs = 1, device = "cpu", verbose = FALSE)
  only_added(out, seu_query, c("predicted.jind", "predicted.jind.score", "predicted.jind.raw"))
  expect_identical(levels(out$predicted.jind), c(ref_classes, "Unassigned"))
  expect_true(all(out$predicted.jind.score >= 0 & out$predicted.jind.score <= 1))
  kept <- out$predicted.jind != "Unassigned"
  expect_identical(as.character(out$predicted.jind[kept]), as.character(out$predicted.jind.raw[kept]))
  expect_identical(Command(out, "RunJIND.jind")@params$method, "jind")
  expect_true("prediction.score.jind" %in% SeuratObject::Assays(out))
})

test_that("TrainJIND once, then RunJIND with the model aligns each query: the labels of RunJIND(query, reference)", {
  method_available("jind")
  opts <- list(n_epochs = 3, gan_epochs = 1, n_top_genes = 500, device = "cpu", verbose = FALSE)
  path <- file.path(tempdir(), "pybridge-test-jind-model")
  model <- do.call(TrainJIND, c(list(seu_ref, path = path), opts))
  expect_s3_class(model, "pybridge_model")
  expect_identical(model$method, "jind")
  expect_identical(model$classes, ref_classes)
  from_model <- RunJIND(seu_query, model, device = "cpu", verbose = FALSE)
  direct <- do.call(RunJIND, c(list(seu_query, seu_ref), opts))
  expect_identical(from_model$predicted.jind, direct$predicted.jind)
  expect_identical(Command(from_model, "RunJIND.jind")@params$stage, "aligned")
  # the directory works too; align = FALSE applies the classifier alone
  plain <- RunJIND(sce_query, path, align = FALSE, device = "cpu", verbose = FALSE)
  expect_identical(S4Vectors::metadata(plain)$pybridge$jind$params$stage, "base")
  expect_error(RunScNym(seu_query, model, verbose = FALSE), "saved 'jind' model", class = "pybridge_input_error")
})

test_that("RunLinear writes labels and scores and nothing else; TrainLinear's model gives the same labels", {
  method_available("linear")
  out <- RunLinear(seu_query, seu_ref, device = "cpu", verbose = FALSE)
  only_added(out, seu_query, c("predicted.linear", "predicted.linear.score"))
  expect_identical(levels(out$predicted.linear), ref_classes)
  expect_false(anyNA(out$predicted.linear))
  expect_true(all(out$predicted.linear.score >= 0 & out$predicted.linear.score <= 1))
  expect_gte(accuracy(out$predicted.linear, truth), 0.9)  # measured 0.95 (Python: test_linear.py)
  expect_identical(Command(out, "RunLinear.linear")@params$method, "linear")
  expect_identical(dim(Embeddings(out, "linear")), c(ncol(out), length(ref_classes)))  # the class logits
  # the input object is otherwise unchanged: without pybridge's outputs it is the input again
  expect_identical(strip_seurat(out, "linear", "RunLinear"), seu_query)
  # with rejection: "Unassigned" is a level and the raw label is kept
  rej <- RunLinear(sce_query, sce_ref, reject = TRUE, device = "cpu", verbose = FALSE)
  expect_true(all(as.character(rej$predicted.linear) %in% c(ref_classes, "Unassigned")))
  kept <- rej$predicted.linear != "Unassigned"
  expect_identical(as.character(rej$predicted.linear[kept]), as.character(rej$predicted.linear.raw[kept]))
  expect_identical(strip_sce(rej, "linear"), sce_query)
  # trained once and saved: the same labels for the same seed and options
  model <- TrainLinear(seu_ref, path = file.path(tempdir(), "pybridge-test-linear-model"), query = seu_query,
                       device = "cpu", verbose = FALSE)
  expect_s3_class(model, "pybridge_model")
  expect_identical(model$method, "linear")
  expect_identical(model$classes, ref_classes)
  expect_identical(RunLinear(seu_query, model, verbose = FALSE)$predicted.linear, out$predicted.linear)
  expect_error(RunJIND(seu_query, model, verbose = FALSE), "saved 'linear' model", class = "pybridge_input_error")
})

test_that("RunItClust writes clusters, their types and per-cell scores (SCE)", {
  method_available("itclust")
  # (ItClust's own warnings about this small gene panel are not what is tested here)
  out <- suppressWarnings(RunItClust(sce_query, sce_ref, layerwise_epochs = 6, pretrain_epochs = 12,
                                     source_epochs = 20, maxiter = 20, device = "cpu", verbose = FALSE))
  added <- setdiff(colnames(colData(out)), colnames(colData(sce_query)))
  expect_true(all(c("itclust.clusters", "itclust.clusters.score", "predicted.itclust") %in% added))
  expect_s3_class(out$itclust.clusters, "factor")
  expect_true(all(out$itclust.clusters.score >= 0 & out$itclust.clusters.score <= 1))
  expect_true(all(as.character(out$predicted.itclust) %in% c(ref_classes, "Unassigned")))
  rec <- S4Vectors::metadata(out)$pybridge$itclust
  expect_identical(rec$kind, "clustering")
  # every cluster maps to one type, as the stored cluster map says
  map <- unlist(rec$cluster_map)
  mapped <- if ("predicted.itclust.raw" %in% added) out$predicted.itclust.raw else out$predicted.itclust
  expect_identical(unname(map[as.character(out$itclust.clusters)]), as.character(mapped))
  expect_identical(nrow(rec$probabilities), ncol(out))
})

test_that("RunCICL clusters without a reference", {
  method_available("cicl")
  out <- RunCICL(seu_query, n.clusters = 4, n_epochs = 3, device = "cpu", verbose = FALSE)
  only_added(out, seu_query, c("cicl.clusters", "cicl.clusters.score"))
  expect_identical(nlevels(out$cicl.clusters), 4L)
  expect_true(all(out$cicl.clusters.score >= 0 & out$cicl.clusters.score <= 1))
  expect_identical(dim(Embeddings(out, "cicl"))[1], ncol(out))
  expect_error(RunCICL(matrix(1)), "not on an object of class 'matrix/array'")
})

test_that("RunNMFTransfer clusters with a labelled reference and maps clusters to its types", {
  method_available("nmf_transfer")
  out <- suppressWarnings(RunNMFTransfer(seu_query, seu_ref, n.clusters = 5, thetas = 0.5, device = "cpu",
                                         verbose = FALSE))
  only_added(out, seu_query, c("nmf_transfer.clusters", "nmf_transfer.clusters.score", "predicted.nmf_transfer"))
  expect_identical(nlevels(droplevels(out$nmf_transfer.clusters)), 5L)
  expect_true(all(as.character(out$predicted.nmf_transfer) %in% c(ref_classes, "Unassigned")))
})

test_that("RunNMFTransfer's SC3 hybrid mode is set from R; svm_max_cells = NULL clusters every cell", {
  method_available("nmf_transfer")
  opts <- list(n.clusters = 5, thetas = 0.5, device = "cpu", verbose = FALSE)
  hyb <- suppressWarnings(do.call(RunNMFTransfer, c(list(sce_query, sce_ref, svm_max_cells = 60), opts)))
  rec <- S4Vectors::metadata(hyb)$pybridge$nmf_transfer$params
  expect_identical(rec$sc3$hybrid$n_cells_sc3, 60L)
  expect_identical(rec$sc3$hybrid$n_cells_svm, ncol(sce_query) - 60L)
  expect_false(anyNA(hyb$nmf_transfer.clusters))
  all_cells <- suppressWarnings(do.call(RunNMFTransfer, c(list(sce_query, sce_ref, svm_max_cells = NULL), opts)))
  expect_null(S4Vectors::metadata(all_cells)$pybridge$nmf_transfer$params$sc3$hybrid)
  expect_error(suppressWarnings(do.call(RunNMFTransfer, c(list(sce_query, sce_ref, svm_max_cells = 10), opts))),
               "svm_max_cells must be at least 50")
})
