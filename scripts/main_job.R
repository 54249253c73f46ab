# pybridge's main job, from R: annotate a real Seurat object with RunScNym.
#
# Data: panc8_small (shipped with the R package): 500 human pancreas cells from
# five technologies (Baron inDrop, Grün CEL-seq, Muraro CEL-seq2, Lawlor
# Fluidigm C1, Segerstolpe Smart-seq2), 100 each, with curated cell types.
# The inDrop cells are the query, the other four technologies the reference;
# scNym trains with pybridge's defaults (the paper's network and losses in its
# "new cell type discovery" mode; up to 400 epochs, early stopping).
#
# Prints a per-class accuracy table against the known labels, the overall
# accuracy and a confidence summary, and writes to out/ (or the directory given
# as the first argument):
#   scnym_umap.png        UMAP of the scNym embedding: predicted vs known labels
#   scnym_confidence.png  histogram of the prediction scores, correct vs wrong
#   panc8_indrop_scnym.rds the annotated Seurat object
#
# Run from the repository root after scripts/setup.sh:
#   PYBRIDGE_PYTHON=.venv/bin/python Rscript scripts/main_job.R
suppressPackageStartupMessages({
  library(pybridge)
  library(SeuratObject)
  library(Seurat)
  library(ggplot2)
})

args <- commandArgs(trailingOnly = TRUE)
out_dir <- if (length(args)) args[[1]] else "out"
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)
device <- Sys.getenv("PYBRIDGE_DEVICE", "auto")

seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge", mustWork = TRUE))
query <- subset(seu, tech == "indrop")
reference <- subset(seu, tech != "indrop")
cat(sprintf("panc8_small: query = inDrop (%d cells), reference = %s (%d cells), %d genes\n",
            ncol(query), paste(setdiff(levels(droplevels(reference$tech)), "indrop"), collapse = ", "),
            ncol(reference), nrow(seu)))

t0 <- Sys.time()
query <- RunScNym(query, reference, labels = "cell_type", seed = 0, device = device)
elapsed <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
info <- Command(query, "RunScNym.scnym")@params

# ---------------------------------------------------------------- summary
truth <- as.character(query$cell_type)
pred <- as.character(query$predicted.scnym)
score <- query$predicted.scnym.score
correct <- pred == truth
classes <- sort(union(unique(truth), levels(query$predicted.scnym)))
per_class <- do.call(rbind, lapply(classes, function(k) {
  is_k <- truth == k
  data.frame(
    cell_type = k,
    cells = sum(is_k),
    predicted_as = sum(pred == k),
    correct = sum(correct[is_k]),
    recall = if (any(is_k)) mean(correct[is_k]) else NA_real_,
    precision = if (any(pred == k)) mean(truth[pred == k] == k) else NA_real_,
    mean_score = if (any(is_k)) mean(score[is_k]) else NA_real_,
    stringsAsFactors = FALSE
  )
}))

cat(sprintf("\nRunScNym finished in %.1f s (%s backend, device %s; %d epochs trained, best epoch %d)\n",
            elapsed, info$r_bridge$backend, info$device, info$training$epochs_trained, info$training$best_epoch))
cat("\nPer-class accuracy on the query (known labels vs predicted):\n")
fmt <- per_class
fmt$recall <- sprintf("%.2f", fmt$recall)
fmt$precision <- ifelse(is.na(fmt$precision), "-", sprintf("%.2f", fmt$precision))
fmt$mean_score <- sprintf("%.2f", fmt$mean_score)
print(fmt, row.names = FALSE, right = FALSE)
cat(sprintf("\nOverall accuracy: %.3f (%d of %d cells)\n", mean(correct), sum(correct), length(correct)))
cat(sprintf("Mean score: %.3f on correct cells, %.3f on wrong cells\n", mean(score[correct]),
            if (any(!correct)) mean(score[!correct]) else NA_real_))
q <- stats::quantile(score, c(0, 0.1, 0.25, 0.5, 0.75, 1))
cat("Score quantiles:", paste(sprintf("%s=%.2f", names(q), q), collapse = "  "), "\n")
cat(sprintf("Cells with score >= 0.9: %d (accuracy among them %.3f); < 0.5: %d\n",
            sum(score >= 0.9), mean(correct[score >= 0.9]), sum(score < 0.5)))
cat("\nConfusion matrix (rows: known, columns: predicted):\n")
print(table(known = factor(truth, classes), predicted = factor(pred, classes)))

# ---------------------------------------------------------------- plots
set.seed(0)
options(Seurat.warn.umap.uwot = FALSE)  # Seurat 4's one-time note that its UMAP default changed
query <- RunUMAP(query, reduction = "scnym", dims = seq_len(ncol(Embeddings(query, "scnym"))),
                 n.neighbors = 15L, seed.use = 0L, verbose = FALSE)
um <- Embeddings(query, "umap")
palette <- setNames(c("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
                      "#1f78b4", "#b2df8a")[seq_along(classes)], classes)
df <- rbind(
  data.frame(UMAP_1 = um[, 1], UMAP_2 = um[, 2], label = pred, correct = correct,
             panel = sprintf("predicted by RunScNym (accuracy %.2f)", mean(correct))),
  data.frame(UMAP_1 = um[, 1], UMAP_2 = um[, 2], label = truth, correct = TRUE, panel = "known cell type")
)
df$panel <- factor(df$panel, levels = unique(df$panel))
df$label <- factor(df$label, levels = classes)
p1 <- ggplot(df, aes(UMAP_1, UMAP_2)) +
  geom_point(aes(colour = label), size = 2.2, alpha = 0.9) +
  geom_point(data = df[!df$correct, ], shape = 4, size = 3.2, stroke = 0.9, colour = "black") +
  facet_wrap(~panel) +
  scale_colour_manual(values = palette, drop = FALSE, name = "cell type") +
  labs(title = "panc8_small inDrop cells annotated from four other technologies",
       subtitle = "UMAP of the scNym embedding; x marks a wrong prediction",
       x = "UMAP 1", y = "UMAP 2") +
  theme_bw(base_size = 13) +
  theme(legend.position = "right", strip.text = element_text(size = 12))
ggsave(file.path(out_dir, "scnym_umap.png"), p1, width = 11, height = 5, dpi = 120)

hist_df <- data.frame(score = score, outcome = factor(ifelse(correct, "correct", "wrong"), c("correct", "wrong")))
# scNym's scores crowd near 1: zoom the axis to the range they cover
lower <- min(0.5, floor(min(score) * 20) / 20)
if (min(score) > 0.8) lower <- floor(min(score) * 100) / 100
p2 <- ggplot(hist_df, aes(score, fill = outcome)) +
  geom_histogram(binwidth = (1 - lower) / 30, boundary = 1, colour = "white") +
  scale_fill_manual(values = c(correct = "#2c7bb6", wrong = "#d7191c"), drop = FALSE, name = NULL) +
  coord_cartesian(xlim = c(lower, 1)) +
  labs(title = "RunScNym prediction scores (top class probability)",
       subtitle = sprintf("%d inDrop cells; mean score %.3f on the %d correct, %.3f on the %d wrong predictions",
                          length(score), mean(score[correct]), sum(correct),
                          if (any(!correct)) mean(score[!correct]) else NA_real_, sum(!correct)),
       x = sprintf("predicted.scnym.score (axis from %.2f)", lower), y = "cells") +
  theme_bw(base_size = 13) +
  theme(legend.position = c(0.1, 0.85))
ggsave(file.path(out_dir, "scnym_confidence.png"), p2, width = 7.5, height = 4.5, dpi = 120)

saveRDS(query, file.path(out_dir, "panc8_indrop_scnym.rds"))
cat(sprintf("\nWrote %s, %s and %s\n", file.path(out_dir, "scnym_umap.png"),
            file.path(out_dir, "scnym_confidence.png"), file.path(out_dir, "panc8_indrop_scnym.rds")))
