# read_captures(): captured predictions (a model's "capture" in <name>.json) as a data.frame.

#' Read the predictions a server captured
#'
#' The server writes one JSON line per captured request under its capture folder
#' (`--capture-dir`, default `<models>/.captures/<model>/*.jsonl`): time, model, version,
#' request id, the input rows (redacted columns left out or hashed) and the predictions.
#'
#' @param path a capture file, or a folder searched for `*.jsonl` files (recursively)
#' @return a data.frame with one row per captured input row: `time` (POSIXct, UTC), `model`,
#'   `version`, `request_id`, `row` (the row's place in its request), the input columns, and
#'   `prediction` (or one `prediction_<name>` column per column of a table answer)
read_captures <- function(path) {
  files <- if (dir.exists(path)) sort(list.files(path, "\\.jsonl$", recursive = TRUE, full.names = TRUE)) else path
  lines <- unlist(lapply(files, readLines, warn = FALSE), use.names = FALSE)
  lines <- lines[nzchar(lines)]
  if (!length(lines)) return(data.frame())
  parts <- lapply(lines, capture_rows)
  columns <- unique(unlist(lapply(parts, names), use.names = FALSE))
  filled <- lapply(parts, function(p) {
    for (col in setdiff(columns, names(p))) p[[col]] <- rep(NA, nrow(p))
    p[columns]
  })
  out <- do.call(rbind, filled)
  rownames(out) <- NULL
  out$time <- as.POSIXct(sub("Z$", "", out$time), format = "%Y-%m-%dT%H:%M:%OS", tz = "UTC")
  out
}

# One JSON line -> a data.frame of its rows.
capture_rows <- function(line) {
  rec <- jsonlite::fromJSON(line, simplifyVector = FALSE)
  n <- length(rec$predictions)
  base <- data.frame(time = rep(rec$time, n), model = rep(rec$model, n), version = rep(as.character(rec$version), n),
                     request_id = rep(rec$request_id, n), row = seq_len(n), stringsAsFactors = FALSE)
  inputs <- rec$inputs
  for (col in unique(unlist(lapply(inputs, names)))) {
    base[[col]] <- vapply(inputs, function(r) scalar(r[[col]]), FUN.VALUE = list(1))
  }
  preds <- rec$predictions
  if (n && is.list(preds[[1]])) {
    for (col in names(preds[[1]])) base[[paste0("prediction_", col)]] <- vapply(preds, function(p) scalar(p[[col]]), list(1))
  } else {
    base$prediction <- vapply(preds, scalar, list(1))
  }
  for (col in names(base)) if (is.list(base[[col]])) base[[col]] <- simplify_column(base[[col]])
  base
}

scalar <- function(x) list(if (is.null(x)) NA else x)

simplify_column <- function(values) {
  flat <- unlist(values, use.names = FALSE)
  if (length(flat) == length(values)) flat else values
}
