# Seurat label transfer and SingleR on a task prepared by benchmarks/tasks.py.
#
#   Rscript benchmarks/peers_r.R TOOL TASK_DIR OUT_DIR [SEED]      (TOOL: seurat | singler)
#
# Reads the binary CSR matrices (cells x genes; data float32, indices int32, indptr float64), which are the
# transposed CSC (genes x cells) matrices R wants, so no copy is made. Writes OUT_DIR/pred.csv (label, raw_label,
# confidence, score, rejected) and OUT_DIR/meta.json (seconds of the tool call alone, excluding R start-up and
# package loading, which are timed separately as load_seconds).
#
# Seurat: the v4 reference-mapping vignette: reference NormalizeData (LogNormalize, 1e4), 2000 vst variable
#   features, ScaleData, 30 PCs; query NormalizeData; FindTransferAnchors(reference.reduction = "pca", dims 1:30)
#   and TransferData. Small queries (< 200 cells) need k.filter = NA and a smaller k.weight / k.score, chosen from
#   the cell counts (recorded in the notes). Confidence = prediction.score.max. Seurat has no rejection rule:
#   nothing is rejected (a 0.5 cut on the score is a common user choice, not Seurat's).
# SingleR: log1p(counts normalised to 1e4) for both sides, default "classic" marker detection, fine-tuning on.
#   SingleR's scores are correlations, not probabilities, so ECE is not computed (confidence NA); the score used
#   to rank cells for the unseen-type AUROC is the delta of the top score over the median score (what SingleR's
#   pruning tests). Rejection = SingleR's pruned labels (pruneScores, nmads = 3): pruned cells count as rejected.

args <- commandArgs(trailingOnly = TRUE)
tool <- args[[1]]
task_dir <- args[[2]]
out_dir <- args[[3]]
seed <- if (length(args) >= 4) as.integer(args[[4]]) else 0L
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

t_load <- proc.time()[["elapsed"]]
suppressPackageStartupMessages(library(Matrix))
if (tool == "seurat") suppressPackageStartupMessages(library(Seurat))
if (tool == "singler") suppressPackageStartupMessages(library(SingleR))
t_load <- proc.time()[["elapsed"]] - t_load

read_side <- function(side) {
  f <- function(ext) file.path(task_dir, paste0(side, "_X.", ext))
  genes <- readLines(file.path(task_dir, paste0(side, "_genes.txt")))
  cells <- readLines(file.path(task_dir, paste0(side, "_cells.txt")))
  indptr <- readBin(f("indptr"), "double", n = length(cells) + 1L, size = 8, endian = "little")
  nnz <- indptr[length(indptr)]
  x <- readBin(f("data"), "double", n = nnz, size = 4, endian = "little")
  i <- readBin(f("indices"), "integer", n = nnz, size = 4, endian = "little")
  m <- new("dgCMatrix", i = i, p = as.integer(indptr), x = x, Dim = c(length(genes), length(cells)))
  # Seurat turns underscores into dashes in feature names; make names safe and the same on both sides
  rownames(m) <- make.unique(gsub("_", "-", genes))
  colnames(m) <- make.unique(cells)
  m
}

lognorm <- function(m) {
  lib <- Matrix::colSums(m)
  lib[lib == 0] <- 1
  m <- m %*% Diagonal(x = 1e4 / lib)
  m@x <- log1p(m@x)
  m
}

set.seed(seed)
ref <- read_side("ref")
qry <- read_side("query")
labels <- readLines(file.path(task_dir, "ref_labels.txt"))
notes <- list()

t0 <- proc.time()[["elapsed"]]
if (tool == "seurat") {
  r <- CreateSeuratObject(ref, min.cells = 0, min.features = 0)
  r$cell_type <- labels
  q <- CreateSeuratObject(qry, min.cells = 0, min.features = 0)
  r <- NormalizeData(r, verbose = FALSE)
  r <- FindVariableFeatures(r, nfeatures = 2000, verbose = FALSE)
  r <- ScaleData(r, verbose = FALSE)
  npcs <- min(30L, ncol(r) - 1L, nrow(r) - 1L)
  r <- RunPCA(r, npcs = npcs, verbose = FALSE, seed.use = seed)
  q <- NormalizeData(q, verbose = FALSE)
  nq <- ncol(q)
  dims <- seq_len(min(npcs, nq - 1L))
  k.filter <- if (min(ncol(r), nq) < 200) NA else 200
  k.score <- min(30L, nq - 1L, ncol(r) - 1L)
  anchors <- FindTransferAnchors(reference = r, query = q, dims = dims, reference.reduction = "pca",
                                 k.filter = k.filter, k.score = k.score, verbose = FALSE)
  n_anchors <- nrow(anchors@anchors)
  k.weight <- min(50L, max(5L, floor(n_anchors / 2)), nq - 1L)
  notes <- list(n_anchors = n_anchors, k_weight = k.weight, k_filter = k.filter, dims = length(dims))
  pred <- TransferData(anchorset = anchors, refdata = r$cell_type, dims = dims, k.weight = k.weight, verbose = FALSE)
  raw <- as.character(pred$predicted.id)
  conf <- as.numeric(pred$prediction.score.max)
  out <- data.frame(label = raw, raw_label = raw, confidence = conf, score = conf, rejected = 0L)
} else if (tool == "singler") {
  res <- SingleR(test = lognorm(qry), ref = lognorm(ref), labels = labels, de.method = "classic")
  raw <- as.character(res$labels)
  pruned <- is.na(res$pruned.labels)
  sc <- as.matrix(res$scores)
  delta <- apply(sc, 1, max) - apply(sc, 1, median)
  lab <- ifelse(pruned, "Unassigned", raw)
  out <- data.frame(label = lab, raw_label = raw, confidence = NA_real_, score = delta, rejected = as.integer(pruned))
  notes <- list(pruned = sum(pruned))
} else {
  stop("unknown tool ", tool)
}
secs <- proc.time()[["elapsed"]] - t0
write.csv(out, file.path(out_dir, "pred.csv"), row.names = FALSE)
ver <- as.character(packageVersion(if (tool == "seurat") "Seurat" else "SingleR"))
json_val <- function(v) if (is.na(v)) "null" else if (is.numeric(v)) format(v) else paste0('"', v, '"')
note_json <- paste(sprintf('"%s": %s', names(notes), vapply(notes, json_val, "")), collapse = ", ")
writeLines(sprintf('{"seconds": %.4f, "load_seconds": %.4f, "version": "%s", "notes": {%s}}', secs, t_load, ver,
                   note_json), file.path(out_dir, "meta.json"))
