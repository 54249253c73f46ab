# Bad input stops with an R error that says what to fix, before anything is written.
skip_if_no_objects()

test_that("a missing label column names the available columns", {
  expect_error(RunScNym(seu_query, seu_ref, labels = "celltypes"),
               paste0("`labels = \"celltypes\"` is not a column of the reference's meta.data; ",
                      "available columns: .*'cell_type'"),
               class = "pybridge_input_error")
  expect_error(RunScNym(sce_query, sce_ref, labels = "nope"), "is not a column of the reference's colData",
               class = "pybridge_input_error")
  ref <- sce_ref
  ref$empty <- NA_character_
  expect_error(RunScNym(sce_query, ref, labels = "empty"), "entirely NA")
  ref$blank <- ifelse(seq_len(ncol(ref)) %% 2 == 0, "", "  ")  # blank labels count as missing
  skip_if_no_python()  # (checked in Python)
  expect_error(RunScNym(sce_query, ref, labels = "blank", verbose = FALSE), "entirely NA or empty")
})

test_that("no shared genes is an error that shows both naming schemes", {
  q <- sce_query
  rownames(q) <- paste0("ENSG", seq_len(nrow(q)))
  expect_error(RunScNym(q, sce_ref), "no genes in common \\(query genes: 'ENSG1', .*reference genes: 'CLPS'",
               class = "pybridge_input_error")
})

test_that("a wrong assay name lists the assays there are", {
  expect_error(RunScNym(seu_query, seu_ref, assay = "SCT"), "Assay 'SCT' is not in the query; available assays: 'RNA'",
               class = "pybridge_input_error")
  expect_error(RunScNym(sce_query, sce_ref, assay = "logcounts"),
               "Assay 'logcounts' is not in the query; available assays: 'counts'", class = "pybridge_input_error")
  expect_error(RunScNym(sce_query, sce_ref, reference.assay = "raw"), "Assay 'raw' is not in the reference")
})

test_that("an empty object is refused", {
  expect_error(RunScNym(sce_query[, integer(0)], sce_ref), "The query has no cells", class = "pybridge_input_error")
  expect_error(RunScNym(sce_query, sce_ref[, integer(0)]), "The reference has no cells", class = "pybridge_input_error")
  expect_error(RunScNym(sce_query[integer(0), ], sce_ref), "The query has no genes", class = "pybridge_input_error")
})

test_that("bad references and arguments", {
  expect_error(RunScNym(seu_query, "/no/such/file.h5ad"), "does not exist", class = "pybridge_input_error")
  d <- withr::local_tempdir()
  expect_error(RunScNym(seu_query, d), "not a saved pybridge model", class = "pybridge_input_error")
  expect_error(RunScNym(seu_query), "`reference` is missing", class = "pybridge_input_error")
  expect_error(RunScNym(seu_query, seu_ref, seed = -1), "`seed`")
  expect_error(RunScNym(seu_query, seu_ref, device = "gpu"), "`device`")
  expect_error(RunScNym(seu_query, seu_ref, name = ""), "`name`")
  expect_error(RunScNym(seu_query, seu_ref, name = "my scnym"), "not a syntactic R name.*\"my.scnym\"",
               class = "pybridge_input_error")
  expect_error(pybridge:::.options(list(3)), "must be named")
})

test_that("a Python argument name in `...` that the R function sets itself points to the R argument", {
  # checked before any data is read or Python is started
  expect_error(RunCICL(seu_query, n_clusters = 4), "`n_clusters` is set by RunCICL\\(\\)'s own argument `n.clusters`",
               class = "pybridge_input_error")
  expect_error(RunNMFTransfer(sce_query, sce_ref, n_clusters = 4), "own argument `n.clusters`",
               class = "pybridge_input_error")
  expect_error(RunScNym(seu_query, seu_ref, labels_key = "cell_type"), "own argument `labels`",
               class = "pybridge_input_error")
  expect_error(RunJIND(seu_query, seu_ref, key.added = "x"),
               "`key.added` is set by RunJIND\\(\\)'s own argument `name`", class = "pybridge_input_error")
  expect_error(TrainScNym(seu_ref, query_layer = "counts"),
               "`query_layer` is set by TrainScNym\\(\\)'s own argument `query.layer`", class = "pybridge_input_error")
  for (k in list(3.5, NA_real_, 0, c(2, 3), "4")) {
    expect_error(RunCICL(seu_query, n.clusters = k), "`n.clusters` must be one positive whole number",
                 class = "pybridge_input_error")  # 3.5 used to become 3 without a word
  }
})

test_that("every R argument that sets a Python option refuses that option in `...`", {
  python_name <- stats::setNames(names(pybridge:::.option_args), pybridge:::.option_args)
  calls <- list(RunScNym = list(seu_query, seu_ref), RunJIND = list(seu_query, seu_ref),
                RunItClust = list(seu_query, seu_ref), RunCICL = list(seu_query),
                RunNMFTransfer = list(seu_query, seu_ref), TrainScNym = list(seu_ref), TrainJIND = list(seu_ref))
  for (fn in names(calls)) {
    f <- if (startsWith(fn, "Run")) utils::getS3method(fn, "Seurat") else get(fn)
    own <- intersect(names(formals(f)), pybridge:::.option_args)
    own <- own[python_name[own] != own]  # (seed, device, verbose: the same name in R and Python)
    expect_gte(length(own), 2L)
    for (arg in own) {
      opt <- stats::setNames(list(1), python_name[[arg]])
      err <- expect_error(do.call(fn, c(calls[[fn]], opt)), class = "pybridge_input_error")
      expect_identical(conditionMessage(err), paste0("`", python_name[[arg]], "` is set by ", fn,
                                                     "()'s own argument `", arg, "`: pass `", arg, " = ...` instead."))
    }
  }
})

test_that("whole numbers become integers for Python in one place", {
  expect_identical(pybridge:::.whole_number(2, "seed"), 2L)
  expect_identical(pybridge:::.whole_number(3L, "n.clusters", min = 1), 3L)
  expect_null(pybridge:::.whole_number(NULL, "n.clusters", min = 1, null_ok = TRUE))
  expect_error(pybridge:::.whole_number(NULL, "seed"), "`seed` must be one non-negative whole number\\.$",
               class = "pybridge_input_error")
  expect_error(pybridge:::.whole_number(2^31, "seed"), "`seed` must be one non-negative whole number")
  expect_error(RunScNym(seu_query, seu_ref, seed = 1.5), "`seed` must be one non-negative whole number")
})

test_that("an existing column of the same name from elsewhere is never overwritten", {
  local_fake_registry()
  q <- seu_query
  q$predicted.scnym <- "mine"
  expect_error(RunScNym(q, seu_ref), "already has predicted.scnym \\(written not by pybridge\\).*another `name =`",
               class = "pybridge_input_error")
  s <- sce_query
  s$predicted.scnym.score <- 1
  expect_error(RunScNym(s, sce_ref), "already has predicted.scnym.score")
})

test_that("the names a method writes come from its registry record", {
  local_fake_registry()
  columns <- function(method, name = method) pybridge:::.targets(name, pybridge:::.method_info(method))$columns
  expect_identical(columns("scnym", "x"), c("predicted.x", "predicted.x.score", "predicted.x.raw"))
  expect_identical(columns("cicl"), c("cicl.clusters", "cicl.clusters.score"))
  expect_identical(columns("nmf_transfer"),
                   c("nmf_transfer.clusters", "nmf_transfer.clusters.score", "predicted.nmf_transfer"))
  expect_identical(columns("itclust"), c("itclust.clusters", "itclust.clusters.score", "predicted.itclust",
                                         "itclust.cell.score", "predicted.itclust.raw"))
  expect_identical(pybridge:::.targets("it", pybridge:::.method_info("itclust"))$assay, "cluster.score.it")
  expect_error(pybridge:::.method_info("nope"), "has no method 'nope'", class = "pybridge_python_error")
  expect_error(pybridge:::.parse_methods(fake_methods[c("name", "kind")]), "without reference, maps_types")
})

test_that("a name clash with any output of the method fails before anything runs in Python", {
  local_fake_registry()  # (a call into Python would fail with "test: Python was called")
  for (col in c("itclust.clusters", "itclust.clusters.score", "itclust.cell.score", "predicted.itclust.raw")) {
    q <- sce_query
    q[[col]] <- "mine"
    expect_error(RunItClust(q, sce_ref), paste0("already has ", col, " \\(written not by pybridge\\)"),
                 class = "pybridge_input_error")
  }
  q <- seu_query
  q$itclust.clusters <- 1
  expect_error(RunItClust(q, seu_ref), "already has itclust.clusters", class = "pybridge_input_error")
  # names a method does not write are no clash: these runs pass the check and go on to Python
  q$predicted.cicl <- "mine"
  expect_error(RunCICL(q, n.clusters = 3, verbose = FALSE), "test: Python was called")
  q$predicted.nmf_transfer <- "mine"
  # NMF transfer maps types only with a labelled reference
  expect_error(RunNMFTransfer(q, n.clusters = 3, verbose = FALSE), "test: Python was called")
  expect_error(RunNMFTransfer(q, seu_ref, labels = NULL, n.clusters = 3, verbose = FALSE),
               "test: Python was called")
  expect_error(RunNMFTransfer(q, seu_ref, n.clusters = 3), "already has predicted.nmf_transfer",
               class = "pybridge_input_error")
})

test_that("errors raised in Python arrive as R errors and nothing is written", {
  skip_if_no_python()
  err <- expect_error(RunScNym(sce_query, sce_ref, n_epoch = 3, verbose = FALSE), class = "pybridge_python_error")
  expect_match(conditionMessage(err), "Unknown ScNymConfig option\\(s\\): n_epoch")
  expect_identical(err$python_type, "TypeError")
  ref <- sce_ref
  ref$one <- "x"
  expect_error(RunScNym(sce_query, ref, labels = "one", verbose = FALSE), "single class",
               class = "pybridge_python_error")
})
