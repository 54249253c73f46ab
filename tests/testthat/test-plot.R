# PlotConfidence(): pure R, on annotations filled in by hand (no Python).
skip_if_no_objects()
skip_if_not_installed("ggplot2")

# A fake annotation result, stored the way RunJIND() stores one (rejection by per-class thresholds).
fake_annotation <- function(object, name = "fake", rejection = TRUE, params = list(), classes = ref_classes) {
  withr::local_seed(7)
  n <- ncol(object)
  truth_here <- as.character(.metadata_of(object)$cell_type)
  pred <- ifelse(stats::runif(n) < 0.8 & truth_here %in% classes, truth_here, sample(classes, n, replace = TRUE))
  score <- ifelse(pred == truth_here, stats::runif(n, 0.5, 1), stats::runif(n, 0.2, 0.8))
  thresholds <- seq(0.3, 0.6, length.out = length(classes))
  labels <- pred
  if (rejection) labels[score < thresholds[match(pred, classes)]] <- "Unassigned"
  probs <- matrix((1 - score) / (length(classes) - 1), n, length(classes))
  probs[cbind(seq_len(n), match(pred, classes))] <- score
  res <- list(kind = "annotation", method = "jind", cells = colnames(object), score = score, probabilities = probs,
              embedding = NULL, params = c(list(thresholds = thresholds), params), labels = labels,
              raw_labels = pred, classes = classes, rejection = rejection)
  assay <- if (pybridge:::.is_seurat(object)) "RNA" else NULL
  pybridge:::.store_result(object, res, name = name, method = "jind", fn = "RunJIND", assay = assay,
                           cells = colnames(object), params = c(res$params, list(method = "jind", name = name)),
                           call_string = "RunJIND(fake)")
}
.metadata_of <- function(object) pybridge:::.metadata(object)

layer_geoms <- function(p) vapply(p$layers, function(l) class(l$geom)[1], "")

test_that("PlotConfidence draws violins and the per-class thresholds of a Seurat object", {
  seu <- fake_annotation(seu_query)
  before <- seu
  p <- PlotConfidence(seu, "fake")
  expect_s3_class(p, "ggplot")
  geoms <- layer_geoms(p)
  expect_true("GeomViolin" %in% geoms)
  expect_true("GeomSegment" %in% geoms)
  seg <- p$layers[[which(geoms == "GeomSegment")]]$data
  expect_equal(seg$threshold[match(ref_classes, seg$type)], seq(0.3, 0.6, length.out = length(ref_classes)))
  # grouped by the label before rejection, types by frequency
  md <- seu[[]]
  counts <- table(as.character(md$predicted.fake.raw))
  expect_identical(levels(p$data$type), names(counts)[order(-as.vector(counts), names(counts))])
  expect_match(p$labels$subtitle, "rejected as Unassigned")
  expect_identical(seu, before)
  built <- ggplot2::ggplot_build(p)  # draws without error
  expect_length(built$data, length(p$layers))
})

test_that("truth splits each type into correct and wrong, on SingleCellExperiment too", {
  seu <- fake_annotation(seu_query)
  p <- PlotConfidence(seu, "fake", truth = "cell_type")
  expect_setequal(sub(" [(].*", "", levels(p$data$status)), c("correct", "wrong"))
  ok <- as.character(seu$predicted.fake.raw) == as.character(seu$cell_type)
  expect_identical(levels(p$data$status), sprintf("%s (%d)", c("correct", "wrong"), c(sum(ok), sum(!ok))))

  sce <- fake_annotation(sce_query)
  before <- sce
  p2 <- PlotConfidence(sce, "fake", truth = "cell_type")
  expect_s3_class(p2, "ggplot")
  expect_true(all(c("GeomViolin", "GeomSegment") %in% layer_geoms(p2)))
  expect_identical(p2$data$score, p$data$score)
  expect_identical(sce, before)
  # the same from a Seurat object converted to SCE (columns only: no stored thresholds)
  sce3 <- suppressWarnings(Seurat::as.SingleCellExperiment(seu))
  p3 <- PlotConfidence(sce3, "fake", truth = "cell_type")
  expect_true("GeomViolin" %in% layer_geoms(p3))
  expect_false("GeomSegment" %in% layer_geoms(p3))
})

test_that("histograms are faceted per type with the thresholds as vertical lines", {
  sce <- fake_annotation(sce_query)
  p <- PlotConfidence(sce, "fake", type = "histogram")
  expect_identical(layer_geoms(p), c("GeomBar", "GeomVline"))
  expect_s3_class(p$facet, "FacetWrap")
  expect_length(ggplot2::ggplot_build(p)$data, 2L)
})

test_that("no thresholds are marked without rejection, or for distance rejection", {
  seu <- fake_annotation(seu_query, rejection = FALSE)
  p <- PlotConfidence(seu, "fake")
  expect_false("GeomSegment" %in% layer_geoms(p))
  expect_null(p$labels$subtitle)
  seu <- fake_annotation(seu_query, params = list(reject_score = "distance"))
  expect_false("GeomSegment" %in% layer_geoms(PlotConfidence(seu, "fake")))
  # columns filled in by hand, without stored parameters
  obj <- seu_query
  obj$predicted.hand <- factor(obj$cell_type)
  obj$predicted.hand.score <- 0.9
  p <- PlotConfidence(obj, "hand", truth = "cell_type")
  expect_identical(levels(p$data$status), c(sprintf("correct (%d)", ncol(obj)), "wrong (0)"))
})

test_that("PlotConfidence errors are input errors that say what to pass", {
  seu <- fake_annotation(seu_query)
  before <- seu
  expect_error(PlotConfidence(seu, "nope"), class = "pybridge_input_error")
  expect_error(PlotConfidence(seu, "nope"), "annotations stored here: 'fake'")
  expect_error(PlotConfidence(seu, "fake", truth = "true_type"), class = "pybridge_input_error")
  expect_error(PlotConfidence(seu, "fake", truth = "true_type"), "'true_type' is not one")
  expect_error(PlotConfidence(seu, "fake", truth = "tech"), "shares no labels", class = "pybridge_input_error")
  expect_error(PlotConfidence(seu, c("a", "b")), class = "pybridge_input_error")
  expect_error(PlotConfidence(matrix(1), "fake"), class = "pybridge_input_error")
  expect_error(PlotConfidence(seu, "fake", type = "box"))
  expect_identical(seu, before)
})
