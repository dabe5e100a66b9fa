# Trains the benchmark's own models and writes the request bodies it sends, with R's expected predictions.
#
#   Rscript bench/train_models.R OUTDIR [MODEL ...]
#
# MODEL is any of: lm, rf, ranger (default: all).  Writes, under OUTDIR:
#   models/bench_<model>.rds (+ bench_ranger.json, its input schema)  - trained once, kept while this script and
#                                                                        the R version are unchanged (a stamp file)
#   payloads/<model>_<rows>.json          the request body {"data": [ {col: value}, ... ]} (records)
#   payloads/<model>_<rows>.expected.json  predict(model, the same rows as an R data.frame), computed here
# Numeric inputs are rounded to 3 decimals so that the JSON text holds exactly the values R predicted on.
suppressPackageStartupMessages({
  library(jsonlite)
  library(randomForest)
  library(ranger)
})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1L) stop("usage: Rscript train_models.R OUTDIR [lm|rf|ranger ...]")
out <- args[[1L]]
which_models <- if (length(args) > 1L) args[-1L] else c("lm", "rf", "ranger")
bad <- setdiff(which_models, c("lm", "rf", "ranger"))
if (length(bad)) stop("unknown model(s): ", paste(bad, collapse = ", "))

mdir <- file.path(out, "models")
pdir <- file.path(out, "payloads")
dir.create(mdir, recursive = TRUE, showWarnings = FALSE)
dir.create(pdir, recursive = TRUE, showWarnings = FALSE)

# Retrain when this script or R's version changes (a fingerprint stored beside each model).
script_path <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])
fingerprint <- paste(unname(tools::md5sum(script_path)), R.version.string,
                     packageVersion("randomForest"), packageVersion("ranger"))
cached <- function(name) {
  stamp <- file.path(mdir, paste0(name, ".stamp"))
  file.exists(file.path(mdir, paste0(name, ".rds"))) && file.exists(stamp) &&
    identical(readLines(stamp, warn = FALSE), fingerprint)
}
save_model <- function(model, name) {
  saveRDS(model, file.path(mdir, paste0(name, ".rds")))
  writeLines(fingerprint, file.path(mdir, paste0(name, ".stamp")))
}

write_payload <- function(tag, newdata, expected) {
  writeLines(toJSON(list(data = newdata), dataframe = "rows", factor = "string", digits = NA),
             file.path(pdir, paste0(tag, ".json")))
  if (is.factor(expected)) expected <- as.character(expected)
  writeLines(toJSON(unname(expected), digits = NA), file.path(pdir, paste0(tag, ".expected.json")))
}

# Draws n rows from `pool` (with replacement), jitters numeric columns by up to 10% and rounds them.
draw_rows <- function(pool, n, seed) {
  set.seed(seed)
  d <- pool[sample.int(nrow(pool), n, replace = TRUE), , drop = FALSE]
  for (v in names(d)) if (is.numeric(d[[v]])) d[[v]] <- round(d[[v]] * runif(n, 0.9, 1.1), 3)
  rownames(d) <- NULL
  d
}

# ---- lm on mtcars-like data (two factor inputs) -------------------------------------------------------------
mtc <- within(mtcars, {
  cyl <- factor(cyl)
  gear <- factor(gear)
})
lm_inputs <- c("wt", "hp", "qsec", "disp", "cyl", "gear")
if ("lm" %in% which_models) {
  if (!cached("bench_lm")) {
    m <- lm(mpg ~ wt + hp + qsec + disp + cyl + gear, data = mtc)
    m$model <- NULL  # what people strip before saving; predict() does not need it
    save_model(m, "bench_lm")
  }
  m <- readRDS(file.path(mdir, "bench_lm.rds"))
  for (n in c(1L, 100L, 1000L)) {
    d <- draw_rows(mtc[, lm_inputs], n, seed = 100L + n)
    write_payload(sprintf("lm_%d", n), d, predict(m, newdata = d))
  }
}

# ---- randomForest classifier (500 trees, numeric and factor inputs) ----------------------------------------------
churn_data <- function(n, seed) {
  set.seed(seed)
  d <- data.frame(
    tenure = round(rexp(n, 1 / 24), 1),
    monthly = round(runif(n, 20, 120), 2),
    calls = rpois(n, 2) + 0,
    usage = round(rgamma(n, 2, 0.1), 2),
    contract = factor(sample(c("monthly", "yearly", "two_year"), n, TRUE, c(0.5, 0.3, 0.2)),
                      levels = c("monthly", "yearly", "two_year")),
    region = factor(sample(c("north", "south", "east", "west"), n, TRUE))
  )
  eta <- -1 + 0.03 * d$monthly - 0.05 * d$tenure + 0.4 * d$calls - 0.01 * d$usage +
    c(monthly = 1, yearly = -0.5, two_year = -1.5)[as.character(d$contract)] +
    c(north = 0, south = 0.3, east = -0.2, west = 0.1)[as.character(d$region)]
  d$churn <- factor(ifelse(runif(n) < plogis(eta), "churn", "stay"), levels = c("stay", "churn"))
  d
}
if ("rf" %in% which_models) {
  train <- churn_data(3000L, seed = 1L)
  if (!cached("bench_rf")) {
    set.seed(2L)
    save_model(randomForest(churn ~ ., data = train, ntree = 500), "bench_rf")
  }
  m <- readRDS(file.path(mdir, "bench_rf.rds"))
  pool <- churn_data(5000L, seed = 3L)[, c("tenure", "monthly", "calls", "usage", "contract", "region")]
  # randomForest breaks tied votes at random: keep only rows whose vote is not tied, so the expected labels are
  # deterministic.
  votes <- predict(m, newdata = pool, type = "vote", norm.votes = FALSE)
  pool <- pool[votes[, 1L] != votes[, 2L], , drop = FALSE]
  for (n in c(1L, 100L, 1000L)) {
    repeat {
      d <- draw_rows(pool, n, seed = 200L + n)
      v <- predict(m, newdata = d, type = "vote", norm.votes = FALSE)
      if (all(v[, 1L] != v[, 2L])) break
      # jitter created a tie: drop those rows from the pool and draw again
      pool <- pool[-sample.int(nrow(pool), 1L), , drop = FALSE]
    }
    write_payload(sprintf("rf_%d", n), d, predict(m, newdata = d))
  }
}

# ---- a large ranger regression forest: 500 trees on 50,000 x 20 ------------------------------------------------
if ("ranger" %in% which_models) {
  p <- 20L
  xnames <- sprintf("x%02d", seq_len(p))
  if (!cached("bench_ranger")) {
    set.seed(4L)
    n <- 50000L
    X <- as.data.frame(matrix(round(rnorm(n * p), 3), n, p, dimnames = list(NULL, xnames)))
    X$y <- with(X, 2 * sin(x01) + x02 * x03 + 0.5 * x04^2 - x05 + 0.3 * x06 * x07 + rnorm(n, sd = 0.5))
    message("training bench_ranger (500 trees, 50000 x 20); cached afterwards")
    save_model(ranger(dependent.variable.name = "y", data = X, num.trees = 500, seed = 5L,
                      num.threads = max(1L, parallel::detectCores())), "bench_ranger")
    # ranger keeps no input types: the bridge reads them from <name>.json
    writeLines(toJSON(list(
      version = "bench",
      schema = list(columns = lapply(xnames, function(v) list(name = v, type = "numeric", na = FALSE)))
    ), auto_unbox = TRUE, pretty = TRUE), file.path(mdir, "bench_ranger.json"))
  }
  m <- readRDS(file.path(mdir, "bench_ranger.rds"))
  set.seed(300L)
  for (n in c(1L, 100L)) {
    d <- as.data.frame(matrix(round(rnorm(n * p), 3), n, p, dimnames = list(NULL, xnames)))
    write_payload(sprintf("ranger_%d", n), d, predict(m, data = d, num.threads = 1L)$predictions)
  }
}
