# Messages, warnings and errors. Messages are gated by `verbose`; warnings and
# errors always show. Errors are plain conditions of class "pybridge_error"
# whose message says what is wrong and how to fix it.

.abort <- function(..., class = NULL, call = NULL, data = list()) {
  msg <- paste0(...)
  cond <- structure(
    c(list(message = msg, call = call), data),
    class = c(class, "pybridge_error", "error", "condition")
  )
  stop(cond)
}

.warn <- function(...) {
  warning(paste0(...), call. = FALSE)
}

.inform <- function(verbose, ..., type = c("info", "done", "step")) {
  if (!isTRUE(verbose)) return(invisible(NULL))
  type <- match.arg(type)
  text <- paste0(...)  # nolint: object_usage_linter. (used in the glue string below)
  fun <- switch(type, info = cli::cli_alert_info, done = cli::cli_alert_success, step = cli::cli_alert)
  # the text is pre-formatted: no glue interpolation of braces in names or paths
  fun("{text}", wrap = FALSE)
  invisible(NULL)
}

# A short, readable list of values for messages: 'a', 'b', 'c', ... (n more)
.examples <- function(x, n = 5L) {
  x <- unique(as.character(x))
  if (!length(x)) return("none")
  head <- paste0("'", utils::head(x, n), "'", collapse = ", ")
  if (length(x) > n) head <- paste0(head, ", ... (", length(x) - n, " more)")
  head
}

.fmt_s <- function(seconds) sprintf("%.1f s", seconds)
