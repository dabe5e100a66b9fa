# The plumber side of the benchmark: one model, served the way a competent R user writes it with plumber 1.2.1.
# The model is read once at start (path in the environment variable BENCH_MODEL); a request is
#   POST /predict  {"data": [ {col: value, ...}, ... ]}  ->  {"predictions": [...]}
# plumber's JSON body parser (jsonlite, simplifyVector = TRUE) already turns the records into a data.frame;
# the handler restores the training factor levels (as character they would be rejected or mis-coded), predicts
# and returns numbers with full precision (digits = NA) or class labels.
library(plumber)

model <- readRDS(Sys.getenv("BENCH_MODEL"))
if (inherits(model, "ranger")) library(ranger)
if (inherits(model, "randomForest")) library(randomForest)

# Factor levels the model was trained with, by input column.
factor_levels <- if (inherits(model, "randomForest")) {
  model$forest$xlevels[model$forest$ncat > 1L]
} else if (inherits(model, "ranger")) {
  if (is.null(model$covariate.levels)) list() else Filter(Negate(is.null), model$covariate.levels)
} else {
  model$xlevels
}

predict_rows <- function(newdata) {
  if (inherits(model, "ranger")) predict(model, data = newdata)$predictions
  else predict(model, newdata = newdata)
}

#* Liveness, for the harness's readiness wait
#* @get /healthz
#* @serializer unboxedJSON
function() {
  list(status = "ok")
}

#* Score rows
#* @post /predict
#* @serializer json list(digits = NA)
function(req, res, data) {
  if (missing(data) || !is.data.frame(data) || nrow(data) == 0L) {
    res$status <- 400L
    return(list(error = "body must be {\"data\": [ {column: value, ...}, ... ]}"))
  }
  for (v in names(factor_levels)) {
    if (v %in% names(data)) data[[v]] <- factor(data[[v]], levels = factor_levels[[v]])
  }
  p <- predict_rows(data)
  if (is.factor(p)) p <- as.character(p)
  list(predictions = unname(p))
}
