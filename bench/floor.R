# The R-only floor: what one request costs inside a single R process with no HTTP, no IPC and no server.
#
#   Rscript bench/floor.R SECONDS_PER_ITEM ITEM [ITEM ...]      ITEM = tag:model.rds:body.json
#
# For each item, times many iterations of exactly what the plumber handler does (bench/plumber/plumber.R):
# parse the JSON body with jsonlite, build the data.frame with the model's factor levels, predict, serialise the
# predictions to JSON. Prints one JSON object: {tag: {"iterations": n, "median_ms": ..., "p10_ms", "p90_ms"}}.
suppressPackageStartupMessages({
  library(jsonlite)
  library(randomForest)
  library(ranger)
})

args <- commandArgs(trailingOnly = TRUE)
budget <- as.numeric(args[[1L]])
items <- strsplit(args[-1L], ":", fixed = TRUE)

factor_levels_of <- function(model) {
  if (inherits(model, "randomForest")) model$forest$xlevels[model$forest$ncat > 1L]
  else if (inherits(model, "ranger")) {
    if (is.null(model$covariate.levels)) list() else Filter(Negate(is.null), model$covariate.levels)
  } else model$xlevels
}

one_request <- function(body, model, factor_levels) {
  data <- fromJSON(body)$data                      # what plumber's JSON parser does (simplifyVector = TRUE)
  for (v in names(factor_levels)) {
    if (v %in% names(data)) data[[v]] <- factor(data[[v]], levels = factor_levels[[v]])
  }
  p <- if (inherits(model, "ranger")) predict(model, data = data)$predictions else predict(model, newdata = data)
  if (is.factor(p)) p <- as.character(p)
  toJSON(list(predictions = unname(p)), digits = NA)
}

out <- list()
models <- list()
for (it in items) {
  tag <- it[[1L]]
  path <- it[[2L]]
  body <- paste(readLines(it[[3L]], warn = FALSE), collapse = "\n")
  if (is.null(models[[path]])) models[[path]] <- readRDS(path)
  model <- models[[path]]
  fl <- factor_levels_of(model)
  for (i in 1:2) one_request(body, model, fl)      # warm up
  times <- numeric(0)
  started <- Sys.time()
  repeat {
    t0 <- Sys.time()
    one_request(body, model, fl)
    times <- c(times, as.numeric(Sys.time()) - as.numeric(t0))
    if ((length(times) >= 5L && as.numeric(Sys.time()) - as.numeric(started) >= budget) || length(times) >= 50000L) break
  }
  out[[tag]] <- list(iterations = length(times), median_ms = 1000 * median(times),
                     p10_ms = 1000 * unname(quantile(times, 0.1)), p90_ms = 1000 * unname(quantile(times, 0.9)))
}
cat(toJSON(out, auto_unbox = TRUE, digits = NA), "\n")
