# Missing values, as R's predict() treats them.
#
# A row with NA gets the answer R's predict() gives for it (NA for lm and glm, a surrogate split for rpart, the
# missing branch for gbm), with two exceptions:
#   bridge_na_problem(model): the classes whose predict() fails on NA, or answers at random, say why,
#     and the gateway refuses such rows with a 422 that says so (every column of the schema then has na false);
#   one_answer_per_row(): predict() methods that drop incomplete rows (na.omit: kernlab, caret, e1071's svm by
#     default) would shift every later answer up a row. The complete rows are scored and the others get NA, in
#     place, as na.exclude does: one answer per input row, always, in order.

bridge_na_problem <- function(model) UseMethod("bridge_na_problem")

bridge_na_problem.default <- function(model) NULL

na_refused <- function(what) sprintf("%s cannot predict rows with missing values", what)

bridge_na_problem.ranger <- function(model) na_refused("ranger")
bridge_na_problem.ppr <- function(model) na_refused("ppr")
bridge_na_problem.lda <- function(model) na_refused("MASS's lda and qda")
bridge_na_problem.qda <- bridge_na_problem.lda
bridge_na_problem.knn3 <- function(model) na_refused("caret's knn3")
bridge_na_problem.lme <- function(model) na_refused("nlme's lme and gls")
bridge_na_problem.gls <- bridge_na_problem.lme
# randomForest formula fits answer NA for such rows; x/y fits stop with "missing values in newdata".
bridge_na_problem.randomForest <- function(model) {
  if (is.null(model$terms)) na_refused("randomForest fitted without a formula") else NULL
}
# partykit sends a row it cannot split (NA, no surrogate) down a random branch unless fitted with
# ctree_control(majority = TRUE): the same row gets different answers from call to call.
bridge_na_problem.party <- function(model) {
  majority <- model$info$control$majority
  if (isFALSE(majority)) {
    "partykit assigns rows with missing values to a random branch (fitted without ctree_control(majority = TRUE)), so its answers for them are not repeatable"
  }
}
# S4 (lme4's merMod: NA in a grouping variable fails, in a fixed effect of glmer gives "non-conformable").
bridge_na_problem.merMod <- function(model) na_refused("lme4's lmer and glmer")

# S4 objects dispatch S3 methods on their S3 class only: look up their superclasses here.
na_problem <- function(model) {
  for (cl in model_classes(model)) {
    method <- utils::getS3method("bridge_na_problem", cl, optional = TRUE, envir = environment(bridge_na_problem))
    if (!is.null(method)) return(method(model))
  }
  NULL
}

one_answer_per_row <- function(score, newdata) {
  n <- nrow(newdata)
  pred <- score(newdata)
  if (rows_of(pred) == n) return(pred)
  keep <- stats::complete.cases(newdata)
  if (all(keep)) return(pred)
  complete <- if (any(keep)) score(newdata[keep, , drop = FALSE]) else pred
  if (rows_of(complete) != sum(keep)) return(pred) # not a matter of NA rows: bridge_output says what is wrong
  at <- rep(NA_integer_, n)
  at[keep] <- seq_len(sum(keep))
  spread_rows(complete, at)
}

rows_of <- function(pred) {
  if (is.list(pred) && !is.data.frame(pred)) {
    rows <- vapply(pred[setdiff(names(pred), list_scalars)], NROW, 1L)
    return(if (length(rows) > 0 && all(rows == rows[1])) rows[1] else -1L)
  }
  NROW(pred)
}

spread_rows <- function(pred, at) {
  if (is.list(pred) && !is.data.frame(pred)) {
    parts <- setdiff(names(pred), list_scalars)
    pred[parts] <- lapply(pred[parts], spread_rows, at = at)
    return(pred)
  }
  if (is.matrix(pred) || is.data.frame(pred)) return(pred[at, , drop = FALSE])
  pred[at]
}
