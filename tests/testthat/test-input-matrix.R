# The bad-input matrix on the R side (issue 8): every Run* function (and TrainScNym) on Seurat objects and
# SingleCellExperiments, with tiny synthetic objects (48 cells x 80 genes) and the smallest settings each
# method allows. Cases checked in R fail before Python is started; the others go to Python and come back
# as R errors or warnings. docs/input-checks.md lists the outcomes; its rows name these tests.
skip_if_no_objects()

RUN_FNS <- c("RunScNym", "RunJIND", "RunLinear", "RunItClust", "RunCICL", "RunNMFTransfer")
R_TINY <- list(
  RunScNym = list(n_epochs = 2, min_epochs = 1, patience = 2, n_hidden = 32, batch_size = 32),
  RunJIND = list(n_top_genes = 80, n_epochs = 2, gan_epochs = 1, gan_min_steps = 1, gan_stop = "epochs",
                 n_latent = 16, n_hidden = 16, gan_hidden = 16),
  RunLinear = list(max_iter = 100),
  RunItClust = list(layerwise_epochs = 3, pretrain_epochs = 6, source_epochs = 3, maxiter = 2, min_genes = 5,
                    min_cells = 3, hidden_dims = c(16, 8), n_top_genes = 80),
  RunCICL = list(n.clusters = 3, n_top_genes = 80, n_layers = 1, head_dim = 16, ffn_dim = 32, proj_hidden = 32,
                 proj_dim = 16, n_epochs = 1, kmeans_n_init = 1, kmeans_n_init_train = 1),
  RunNMFTransfer = list(n.clusters = 3, gene_filter = FALSE, thetas = 0.5, nmf_max_iter = 50, kmeans_n_init = 2,
                        nmf_refine = FALSE)
)
LABELS <- c("T cell / CD4+", "Zelltyp \u00e4 \u03b2", "x_y")  # spaces, a slash, unicode, an underscore

tiny_counts <- function(n = 48L, seed = 1L, prefix = "c", genes = paste0("G", 1:80)) {
  set.seed(seed)
  lab <- rep(1:3, length.out = n)
  mu <- matrix(2, length(genes), 3)
  for (t in 1:3) mu[(t - 1) * 10 + 1:10, t] <- 15
  m <- matrix(as.numeric(rpois(length(genes) * n, mu[, lab])), length(genes), n,
              dimnames = list(genes, paste0(prefix, seq_len(n))))
  list(counts = methods::as(m, "CsparseMatrix"), labels = LABELS[lab])
}
tiny_seurat <- function(...) {
  x <- tiny_counts(...)
  s <- suppressWarnings(SeuratObject::CreateSeuratObject(x$counts))
  s$cell_type <- x$labels
  s
}
tiny_sce <- function(...) {
  x <- tiny_counts(...)
  SingleCellExperiment::SingleCellExperiment(assays = list(counts = x$counts),
                                             colData = S4Vectors::DataFrame(cell_type = x$labels))
}
tiny <- list(
  Seurat = list(query = tiny_seurat(seed = 2L, prefix = "q"), reference = tiny_seurat()),
  SCE = list(query = tiny_sce(seed = 2L, prefix = "q"), reference = tiny_sce())
)

# Call `fn` with symbols (not values) for the objects, so that the call the command log deparses stays small.
run_fn <- function(fn, object, reference = NULL, ...) {
  opts <- c(R_TINY[[fn]], list(device = "cpu", verbose = FALSE), list(...))
  opts <- opts[!duplicated(names(opts), fromLast = TRUE)]
  ref_arg <- if (fn == "RunCICL") list() else list(reference = quote(reference))
  eval(as.call(c(list(as.name(fn), quote(object)), ref_arg, opts)))
}
output_columns <- function(fn) {
  name <- pybridge:::.python_names[[fn]]
  if (fn %in% c("RunScNym", "RunJIND", "RunLinear")) paste0("predicted.", name) else paste0(name, ".clusters")
}
reticulate_cuda <- function() {
  pybridge:::.py_module()  # pybridge's Python, started the way the Run functions start it
  isTRUE(reticulate::py_eval("__import__('torch').cuda.is_available()"))
}
meta_of <- function(x) if (inherits(x, "Seurat")) x[[]] else as.data.frame(colData(x), optional = TRUE)

# ------------------------------------------------------------------ cases checked in R (no Python)
for (cls in names(tiny)) {
  q0 <- tiny[[cls]]$query
  r0 <- tiny[[cls]]$reference
  for (fn in RUN_FNS) {
    test_that(paste0(fn, " (", cls, "): bad input stops in R with a pybridge_input_error naming the fix"), {
      local_fake_registry()  # the registry record without Python; any call into Python fails
      with_ref <- fn != "RunCICL"
      if (cls == "SCE") {  # (a Seurat object cannot hold 0 cells: SeuratObject refuses to make one)
        expect_error(run_fn(fn, q0[, integer(0)], r0), "has no cells \\(0 columns\\)", class = "pybridge_input_error")
      }
      expect_error(run_fn(fn, q0, r0, assay = "nope"), "Assay 'nope' is not in the (query|object); available assays",
                   class = "pybridge_input_error")
      expect_error(run_fn(fn, matrix(1), r0), "works on a Seurat object or a SingleCellExperiment",
                   class = "pybridge_input_error")
      expect_error(run_fn(fn, q0, r0, seed = -1), "`seed`", class = "pybridge_input_error")
      expect_error(run_fn(fn, q0, r0, device = "gpu"), "`device`", class = "pybridge_input_error")
      q <- q0
      q[[output_columns(fn)]] <- "mine"  # a column of the same name that pybridge did not write
      expect_error(run_fn(fn, q, r0), "already has .*written not by pybridge.*another `name =`",
                   class = "pybridge_input_error")
      if (with_ref) {
        if (cls == "SCE") {
          expect_error(run_fn(fn, q0, r0[, integer(0)]), "The reference has no cells", class = "pybridge_input_error")
        }
        expect_error(run_fn(fn, q0, r0, labels = "celltype"), "`labels = \"celltype\"` is not a column",
                     class = "pybridge_input_error")
        r <- r0
        r$cell_type <- NA
        expect_error(run_fn(fn, q0, r), "label column 'cell_type' is entirely NA", class = "pybridge_input_error")
        if (cls == "SCE") {
          q <- q0
          rownames(q) <- paste0("ENSG", seq_len(nrow(q)))
        } else {
          q <- tiny_seurat(seed = 2L, prefix = "q", genes = paste0("ENSG", 1:80))
        }
        expect_error(run_fn(fn, q, r0), "no genes in common \\(query genes: 'ENSG1'", class = "pybridge_input_error")
      }
      if (cls == "SCE") {
        expect_error(run_fn(fn, q0[integer(0), ], r0), "has no genes \\(0 rows\\)", class = "pybridge_input_error")
        q <- q0
        rownames(q)[2] <- "G1"
        expect_error(run_fn(fn, q, r0), "1 duplicated gene names \\('G1'\\).*make.unique",
                     class = "pybridge_input_error")
        rownames(q) <- NULL
        expect_error(run_fn(fn, q, r0), "has no gene names \\(rownames\\)", class = "pybridge_input_error")
      }
    })
  }
}

# ------------------------------------------------------------------ through Python
for (cls in names(tiny)) {
  for (fn in RUN_FNS) {
    test_that(paste0(fn, " (", cls, "): runs, keeps labels verbatim, re-running replaces only its own output"), {
      skip_if_no_python()
      q <- tiny[[cls]]$query
      q$keep_me <- 1.5
      r <- tiny[[cls]]$reference
      out <- suppressWarnings(run_fn(fn, q, r))
      added <- setdiff(colnames(meta_of(out)), colnames(meta_of(q)))
      expect_true(output_columns(fn) %in% added)
      expect_identical(meta_of(out)[colnames(meta_of(q))], meta_of(q))  # nothing else changed
      name <- pybridge:::.python_names[[fn]]
      mapped <- paste0("predicted.", name)
      if (mapped %in% added) {  # verbatim, not make.names'd
        expect_true(all(as.character(meta_of(out)[[mapped]]) %in% c(LABELS, "Unassigned")))
      }
      targets <- pybridge:::.targets(name, pybridge:::.method_info(name))
      expect_message(pybridge:::.check_target(out, name, name, targets, verbose = TRUE),
                     paste0("Replacing the earlier ", name, " results stored under name '", name, "'"))
      if (fn == "RunCICL") {  # the Run functions pass `verbose` on to that check (one noisy run is enough)
        expect_message(suppressWarnings(run_fn(fn, out, r, seed = 1, verbose = TRUE)), "Replacing the earlier cicl")
      }
      out2 <- suppressWarnings(run_fn(fn, out, r, seed = 1))
      expect_identical(out2$keep_me, q$keep_me)
      expect_identical(sort(colnames(meta_of(out2))), sort(colnames(meta_of(out))))
    })

    test_that(paste0(fn, " (", cls, "): Python-side errors arrive as R errors and nothing is written"), {
      skip_if_no_python()
      q <- tiny[[cls]]$query
      r <- tiny[[cls]]$reference
      if (!reticulate_cuda()) {
        expect_error(run_fn(fn, q, r, device = "cuda"), "no CUDA GPU", class = "pybridge_python_error")
      }
      bad <- q
      counts <- if (cls == "SCE") counts(bad) else counts_of(bad)
      counts[1, 1] <- -1
      if (cls == "SCE") {
        counts(bad) <- counts
      } else {
        bad <- SetAssayData(bad, "counts", counts)  # (the second argument: `slot` in SeuratObject 4, `layer` in 5)
      }
      expect_error(run_fn(fn, bad, r), "contains negative values", class = "pybridge_python_error")
      expect_error(run_fn(fn, q, r, n_epoch = 3), "Unknown .*Config option\\(s\\): n_epoch",
                   class = "pybridge_python_error")
    })
  }
}

test_that("a log-normalised matrix passed as counts warns in R and still runs", {
  skip_if_no_python()
  q <- tiny$SCE$query
  counts(q) <- log1p(counts(q))
  expect_warning(out <- run_fn("RunScNym", q, tiny$SCE$reference), "looks log-transformed")
  expect_false(anyNA(out$predicted.scnym))
})

test_that("numeric labels and factors with unused levels: classes are the used values, as text", {
  skip_if_no_python()
  r <- tiny$Seurat$reference
  r$num <- as.integer(factor(r$cell_type))
  out <- run_fn("RunScNym", tiny$Seurat$query, r, labels = "num")
  expect_setequal(levels(out$predicted.scnym), c("1", "2", "3"))
  r$fac <- factor(r$cell_type, levels = c(LABELS, "never used"))
  out <- run_fn("RunScNym", tiny$Seurat$query, r, labels = "fac")
  expect_setequal(levels(out$predicted.scnym), LABELS)
})

# ------------------------------------------------------------------ Seurat assays
seurat_two_assays <- function(alt = c("counts", "data_only", "ensembl")) {
  alt <- match.arg(alt)
  s <- tiny_seurat(seed = 2L, prefix = "q")
  m <- tiny_counts(seed = 2L, prefix = "q")$counts  # the counts of `s`
  if (alt == "data_only") {
    # (SeuratObject 5 warns that an assay of normalised data has no counts layer)
    suppressWarnings(s[["ALT"]] <- SeuratObject::CreateAssayObject(data = log1p(m)))
  } else {
    if (alt == "ensembl") rownames(m) <- paste0("ENSG", seq_len(nrow(m)))
    s[["ALT"]] <- SeuratObject::CreateAssayObject(counts = m)
  }
  SeuratObject::DefaultAssay(s) <- "ALT"
  s
}

test_that("assay = NULL uses the active (default) assay, whatever its name; assay = picks another", {
  r <- tiny$Seurat$reference
  # the active assay ALT has Ensembl IDs: the error proves ALT, not RNA, was read
  expect_error(run_fn("RunScNym", seurat_two_assays("ensembl"), r), "no genes in common \\(query genes: 'ENSG1'",
               class = "pybridge_input_error")
  # an active assay with normalised data only: the RNA assay's raw counts instead, with a message; named
  # explicitly, it is an error that names the assays with counts
  expect_message(got <- pybridge:::.extract(seurat_two_assays("data_only"), verbose = TRUE),
                 "default assay 'ALT' of the query holds no raw counts.*reading the raw counts of assay 'RNA'")
  expect_identical(got$assay, "RNA")
  expect_error(run_fn("RunScNym", seurat_two_assays("data_only"), r, assay = "ALT"),
               "Assay 'ALT' of the query holds no raw counts.*assays with a counts layer: 'RNA'",
               class = "pybridge_input_error")
  skip_if_no_python()
  q <- seurat_two_assays("data_only")
  out <- run_fn("RunScNym", q, r, assay = "RNA")
  expect_identical(DefaultAssay(out), "ALT")  # the active assay is not changed
  expect_identical(Command(out, "RunScNym.scnym")@params$assay, "RNA")
  expect_identical(Command(out, "RunScNym.scnym")@assay.used, "RNA")
  expect_identical(SeuratObject::DefaultAssay(out[["scnym"]]), "RNA")
  expect_identical(layer_of(out, "data", assay = "ALT"), layer_of(q, "data", assay = "ALT"))
  # a Seurat reference's assay is chosen the same way, with reference.assay
  expect_error(run_fn("RunScNym", tiny$Seurat$query, seurat_two_assays("data_only"), reference.assay = "ALT"),
               "Assay 'ALT' of the reference holds no raw counts.*Pass `reference.assay =`",
               class = "pybridge_input_error")
})

test_that("Seurat v4 assays are read with the v4 accessors (the v5 branch: test-seurat5.R, in the trixie lane)", {
  s <- tiny_seurat()
  got <- pybridge:::.seurat_counts(s, NULL, "query")
  expect_identical(got$assay, "RNA")
  expect_identical(got$counts, counts_of(s))
  if (!exists("LayerData", envir = asNamespace("SeuratObject"), inherits = FALSE)) {
    skip("SeuratObject < 5 (Debian bookworm: 4.1.3, no Assay5): the LayerData() branch is tested in the trixie lane")
  }
  suppressWarnings(s[["RNA"]] <- methods::as(s[["RNA"]], "Assay5"))  # ("changing from Assay to Assay5")
  expect_identical(pybridge:::.seurat_counts(s, NULL, "query")$counts, counts_of(s))
})

# ------------------------------------------------------------------ SingleCellExperiment names
test_that("an SCE without cell names (or with duplicated ones) is annotated by position and not renamed", {
  skip_if_no_python()
  q <- tiny$SCE$query
  colnames(q) <- NULL
  out <- run_fn("RunScNym", q, tiny$SCE$reference)
  expect_null(colnames(out))
  expect_identical(length(out$predicted.scnym), ncol(q))
  named <- run_fn("RunScNym", tiny$SCE$query, tiny$SCE$reference)
  expect_identical(as.character(out$predicted.scnym), as.character(named$predicted.scnym))  # same cells, same order
  d <- tiny$SCE$query
  colnames(d) <- rep("cell", ncol(d))
  out <- run_fn("RunScNym", d, tiny$SCE$reference)
  expect_identical(colnames(out), colnames(d))
  expect_identical(as.character(out$predicted.scnym), as.character(named$predicted.scnym))
})

test_that("cell names shared by the reference and the query are fine", {
  skip_if_no_python()
  q <- tiny$SCE$query
  colnames(q) <- colnames(tiny$SCE$reference)
  out <- run_fn("RunScNym", q, tiny$SCE$reference)
  expect_identical(colnames(out), colnames(q))
  expect_false(anyNA(out$predicted.scnym))
})

# ------------------------------------------------------------------ saved models
test_that("saved models: wrong method, a folder of pickles, a future format", {
  d <- withr::local_tempdir()
  writeBin(as.raw(c(0x80, 0x04, 0x4e, 0x2e)), file.path(d, "model.pkl"))
  expect_error(run_fn("RunScNym", tiny$SCE$query, d), "not a saved pybridge model \\(it has no pybridge.json\\)",
               class = "pybridge_input_error")
  skip_if_no_python()
  path <- file.path(withr::local_tempdir(), "m")
  model <- TrainScNym(tiny$SCE$reference, path = path, n_epochs = 2, min_epochs = 1, n_hidden = 32, device = "cpu",
                      verbose = FALSE)
  expect_error(run_fn("RunJIND", tiny$SCE$query, model), "saved 'scnym' model; RunJIND\\(\\) needs a 'jind' model",
               class = "pybridge_input_error")
  meta <- jsonlite::fromJSON(file.path(path, "pybridge.json"), simplifyVector = FALSE)
  meta$format_version <- 99L
  writeLines(jsonlite::toJSON(meta, auto_unbox = TRUE, null = "null"), file.path(path, "pybridge.json"))
  expect_error(run_fn("RunScNym", tiny$SCE$query, path), "Upgrade pybridge", class = "pybridge_python_error")
  meta$format_version <- 1L
  meta$pybridge_version <- "0.0.1"
  writeLines(jsonlite::toJSON(meta, auto_unbox = TRUE, null = "null"), file.path(path, "pybridge.json"))
  expect_warning(out <- run_fn("RunScNym", tiny$SCE$query, path), "written by pybridge 0.0.1")
  expect_false(anyNA(out$predicted.scnym))
  f <- tempfile(fileext = ".txt")
  writeLines("x", f)
  expect_error(TrainScNym(tiny$SCE$reference, path = f, verbose = FALSE), "exists and is not a directory")
})

test_that("TrainScNym and SCE assays: the same checks as the Run functions", {
  r <- tiny$SCE$reference
  expect_error(TrainScNym(r, labels = "celltype", verbose = FALSE), "`labels = \"celltype\"` is not a column",
               class = "pybridge_input_error")
  d <- r
  rownames(d)[2] <- "G1"
  expect_error(TrainScNym(d, verbose = FALSE), "duplicated gene names", class = "pybridge_input_error")
  q <- tiny$SCE$query
  rownames(q) <- paste0("ENSG", seq_len(nrow(q)))
  expect_error(TrainScNym(r, query = q, verbose = FALSE), "no genes in common", class = "pybridge_input_error")
  # an SCE with normalised values only: no 'counts' assay
  lc <- SingleCellExperiment(assays = list(logcounts = log1p(counts(tiny$SCE$query))))
  expect_error(run_fn("RunScNym", lc, r), "Assay 'counts' is not in the query; available assays: 'logcounts'",
               class = "pybridge_input_error")
})

test_that("NA counts in R arrive in Python as NaN and are refused", {
  skip_if_no_python()
  q <- tiny$SCE$query
  m <- counts(q)
  m[3, 3] <- NA
  counts(q) <- m
  expect_error(run_fn("RunScNym", q, tiny$SCE$reference), "NaN or infinite values", class = "pybridge_python_error")
})
