# RunConsensus: several annotators trained on the same reference and combined (tiny
# member configurations: properties of the combination, not accuracy).
skip_if_no_objects()

# the members (`registered`: the Python side's methods): linear too where the Python side has it
consensus_members <- function(registered) {
  if ("linear" %in% registered) c("scnym", "jind", "linear") else c("scnym", "jind")
}
fast_members <- list(scnym = list(n_epochs = 3), jind = list(n_epochs = 3, align = FALSE))
fit_consensus <- function(query, ref, members, ...) {
  RunConsensus(query, ref, methods = members, member.options = fast_members[intersect(names(fast_members), members)],
               device = "cpu", verbose = FALSE, ...)
}
consensus_columns <- function(members, name = "consensus", raw = TRUE) {
  paste0("predicted.", name, c("", ".score", if (raw) ".raw", ".agreement", rbind(paste0(".", members),
                                                                                  paste0(".", members, ".score"))))
}
# the label of the highest probability per cell, from a cells x classes matrix
argmax <- function(probs, classes) classes[max.col(probs, ties.method = "first")]

test_that("RunConsensus dispatches for both classes; other objects get the default method's error", {
  for (x in list(sce_query, seu_query)) {
    expect_error(RunConsensus(x, seu_ref, seed = -1), "`seed` must be one non-negative whole number",
                 class = "pybridge_input_error")
  }
  expect_error(RunConsensus(matrix(1), seu_ref),
               "works on a Seurat object or a SingleCellExperiment, not on .*pybridge\\.consensus\\(\\)",
               class = "pybridge_input_error")
})

test_that("bad methods, reject and member.options are refused in R, before Python", {
  local_fake_registry()  # (a call into Python would fail with "test: Python was called")
  run <- function(...) RunConsensus(seu_query, seu_ref, verbose = FALSE, ...)
  expect_error(run(methods = "scnym"), "needs at least two different methods in `methods`, got only 'scnym'",
               class = "pybridge_input_error")
  expect_error(run(methods = c("scnym", "jind", "scnym")), "`methods` names 'scnym' more than once",
               class = "pybridge_input_error")
  for (bad in list(character(), c("scnym", NA), c("scnym", ""), 1:2, list("scnym", "jind"))) {
    expect_error(run(methods = bad), "`methods` must be a character vector|at least two different methods",
                 class = "pybridge_input_error")
  }
  for (bad in list(NA, "yes", c(TRUE, FALSE), 1)) {
    expect_error(run(reject = bad), "`reject` must be TRUE or FALSE", class = "pybridge_input_error")
  }
  two <- c("scnym", "jind")
  expect_error(run(methods = two, member.options = list(linear = list(C = 2))),
               "options for 'linear', which is not among `methods` \\(scnym, jind\\)", class = "pybridge_input_error")
  expect_error(run(methods = two, member.options = list(list(n_epochs = 3))), "must be named by member",
               class = "pybridge_input_error")
  expect_error(run(methods = two, member.options = list(scnym = 3)), "`member.options\\$scnym` must be a named list",
               class = "pybridge_input_error")
  expect_error(run(methods = two, member.options = list(scnym = list(3))), "`member.options\\$scnym` must be a named",
               class = "pybridge_input_error")
  expect_error(run(methods = two, member.options = "n_epochs = 3"), "must be a list named by member",
               class = "pybridge_input_error")
  expect_error(run(methods = two, member.options = list(jind = list(labels_key = "x"))),
               "`labels_key` is set by RunConsensus\\(\\)'s own argument `labels`", class = "pybridge_input_error")
  expect_error(run(methods = two, n_epochs = 3), "takes no method options in `...` \\(got `n_epochs`\\)",
               class = "pybridge_input_error")
  model <- structure(list(path = tempdir(), method = "scnym"), class = "pybridge_model")
  expect_error(RunConsensus(seu_query, model, verbose = FALSE), "cannot use a saved model",
               class = "pybridge_input_error")
})

test_that("a clash with any column the consensus writes is refused before training", {
  local_fake_registry()
  for (col in c("predicted.consensus.agreement", "predicted.consensus.jind", "predicted.consensus.scnym.score")) {
    q <- seu_query
    q[[col]] <- 1
    expect_error(RunConsensus(q, seu_ref, methods = c("scnym", "jind"), verbose = FALSE),
                 paste0("already has ", col, " \\(written not by pybridge\\)"), class = "pybridge_input_error")
  }
  s <- sce_query
  s$predicted.cons.agreement <- "mine"
  expect_error(RunConsensus(s, sce_ref, methods = c("scnym", "jind"), name = "cons", verbose = FALSE),
               "already has predicted.cons.agreement", class = "pybridge_input_error")
  # a member that is not among `methods` writes nothing: no clash, the run goes on to Python
  q <- seu_query
  q$predicted.consensus.linear <- "mine"
  expect_error(RunConsensus(q, seu_ref, methods = c("scnym", "jind"), verbose = FALSE), "test: Python was called")
})

test_that("the names the consensus writes: its record, not the registry's", {
  info <- list(kind = "annotation", extra_fields = c("agreement", "scnym", "scnym.score"))
  expect_identical(pybridge:::.targets("cons", info)$columns,
                   c("predicted.cons", "predicted.cons.score", "predicted.cons.raw", "predicted.cons.agreement",
                     "predicted.cons.scnym", "predicted.cons.scnym.score"))
})

test_that("methods the Python side does not have as annotators are refused there, with a clear message", {
  skip_if_no_python()
  err <- expect_error(RunConsensus(sce_query, sce_ref, methods = c("scnym", "cicl"), verbose = FALSE),
                      class = "pybridge_python_error")
  expect_match(conditionMessage(err), "'cicl' is not an annotation method; consensus members: .*jind.*scnym")
  expect_identical(err$python_type, "ValueError")
  expect_error(RunConsensus(sce_query, sce_ref, methods = c("scnym", "nope"), verbose = FALSE),
               "Unknown method 'nope'; available: ", class = "pybridge_python_error")
  expect_error(RunConsensus(sce_query, sce_ref, methods = c("scnym", "jind"), verbose = FALSE,
                            member.options = list(scnym = list(n_epoch = 3))),
               "Unknown ScNymConfig option\\(s\\): n_epoch", class = "pybridge_python_error")
})

test_that("RunConsensus (Seurat) writes the label, score, raw label, agreement and each member's label and score", {
  skip_if_no_python()
  members <- consensus_members(run_once("methods", pybridge_methods())$name)
  out <- run_once("consensus-seurat", fit_consensus(seu_query, seu_ref, members))
  cols <- consensus_columns(members)
  only_added(out, seu_query, cols)
  expect_s3_class(out$predicted.consensus, "factor")
  expect_identical(levels(out$predicted.consensus), c(ref_classes, "Unassigned"))
  expect_identical(levels(out$predicted.consensus.raw), ref_classes)
  for (m in members) {
    expect_identical(levels(out[[paste0("predicted.consensus.", m)]][[1]]), ref_classes)
    score <- out[[paste0("predicted.consensus.", m, ".score")]][[1]]
    expect_type(score, "double")
    expect_true(all(score >= 0 & score <= 1))
  }
  expect_type(out$predicted.consensus.score, "double")
  expect_type(out$predicted.consensus.agreement, "double")

  # the label is the argmax of the stored mean probabilities, the score its probability
  probs <- GetAssayData(out, assay = "prediction.score.consensus", slot = "data")
  classes <- out[["prediction.score.consensus"]][["class"]][[1]]
  expect_identical(classes, ref_classes)
  probs <- t(as.matrix(probs))
  expect_identical(rownames(probs), colnames(seu_query))
  expect_equal(unname(rowSums(probs)), rep(1, ncol(out)), tolerance = 1e-5)
  top <- argmax(probs, classes)
  expect_identical(as.character(out$predicted.consensus.raw), top)
  kept <- out$predicted.consensus != "Unassigned"
  expect_identical(as.character(out$predicted.consensus[kept]), top[kept])
  expect_equal(unname(apply(probs, 1, max)), unname(out$predicted.consensus.score), tolerance = 1e-6)

  # agreement: the share of members whose label is the consensus label, in [1/k, 1]
  votes <- vapply(members, function(m) as.character(out[[paste0("predicted.consensus.", m)]][[1]]) == top,
                  logical(ncol(out)))
  expect_equal(unname(out$predicted.consensus.agreement), unname(rowMeans(votes)))
  expect_true(all(out$predicted.consensus.agreement >= 1 / length(members) - 1e-12 &
                    out$predicted.consensus.agreement <= 1))
  # rejected only where the members disagree
  expect_true(all(out$predicted.consensus.agreement[!kept] < 1))
  expect_gt(accuracy(out$predicted.consensus.raw, truth), 0.5)

  cmd <- Command(out, "RunConsensus.consensus")
  expect_identical(cmd@params$methods, members)
  expect_identical(cmd@params$`function`, "RunConsensus")
  expect_true(cmd@params$reject)
  expect_setequal(names(cmd@params$members), members)
  expect_match(cmd@call.string, "^RunConsensus\\(")
})

test_that("RunConsensus changes nothing else in the Seurat object", {
  skip_if_no_python()
  members <- consensus_members(run_once("methods", pybridge_methods())$name)
  out <- run_once("consensus-seurat", fit_consensus(seu_query, seu_ref, members))
  out@meta.data <- out@meta.data[, setdiff(colnames(out[[]]), consensus_columns(members)[-(1:3)])]
  expect_identical(strip_seurat(out, "consensus", "RunConsensus"), seu_query)
})

test_that("RunConsensus works on a SingleCellExperiment; reject = FALSE; a rerun replaces every member column", {
  skip_if_no_python()
  # jind and linear where the Python side has linear: another set than the Seurat run's and the rerun's
  members <- consensus_members(run_once("methods", pybridge_methods())$name)[-1]
  if (length(members) < 2L) members <- c("scnym", "jind")
  out <- fit_consensus(sce_query, sce_ref, members, name = "cons", reject = FALSE)
  added <- setdiff(colnames(colData(out)), colnames(colData(sce_query)))
  expect_identical(added, consensus_columns(members, "cons", raw = FALSE))
  expect_false(any(out$predicted.cons == "Unassigned"))
  rec <- S4Vectors::metadata(out)$pybridge$cons
  expect_identical(rec$method, "consensus")
  expect_identical(rec$kind, "annotation")
  expect_identical(colnames(rec$probabilities), ref_classes)
  expect_identical(rownames(rec$probabilities), colnames(sce_query))
  expect_identical(as.character(out$predicted.cons), argmax(rec$probabilities, ref_classes))
  expect_identical(rec$params$methods, members)
  expect_false(rec$params$reject)
  expect_true(all(out$predicted.cons.agreement >= 1 / length(members) - 1e-12 & out$predicted.cons.agreement <= 1))
  for (m in members) expect_s3_class(out[[paste0("predicted.cons.", m)]], "factor")
  stripped <- out
  for (col in added) stripped[[col]] <- NULL
  expect_identical(strip_sce(stripped, "cons"), sce_query)

  # again under the same name with other members: the first run's member columns go too
  other <- c("scnym", setdiff(members, "scnym")[[1]])
  again <- fit_consensus(out, sce_ref, other, name = "cons")
  added <- setdiff(colnames(colData(again)), colnames(colData(sce_query)))
  expect_identical(added, consensus_columns(other, "cons"))
  expect_identical(S4Vectors::metadata(again)$pybridge$cons$params$methods, other)
})
