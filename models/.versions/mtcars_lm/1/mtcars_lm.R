# Scoring script for the model mtcars_lm (the bridge sources it into an environment of its own).
#
# The default scoring of an lm is predict(model, newdata): one number per row. This script returns what the
# default does not give: a 90% prediction interval beside the estimate. A data.frame answers one object per
# row: {"mpg": 21.6, "lower": 17.4, "upper": 25.8}.

level <- 0.9

# Optional: called once after the model is loaded (its value is ignored). Here it checks the model is the one
# this script was written for, so a retrained model with other predictors fails at load, not at request time.
init <- function(model) {
  stopifnot(identical(all.vars(delete.response(terms(model))), c("wt", "hp", "cyl")))
}

# Required: newdata is a data.frame of the request's rows (cyl a factor with the training levels); return one
# row per input row.
score <- function(model, newdata) {
  p <- predict(model, newdata, interval = "prediction", level = level)
  data.frame(mpg = p[, "fit"], lower = p[, "lwr"], upper = p[, "upr"])
}
