# bridge_score(model, newdata, args): the raw prediction for newdata, from the model class's own predict().
#
# Each method names the predict() arguments that give a serving answer for its class (class labels, numbers on
# the response scale); args (the model's predict_args from <name>.json) are merged over those defaults, the
# user's values winning. A warning during predict() is an error: R warns when it coerces data it should not
# (e.g. "NAs introduced by coercion"), and a prediction made after such a warning is not one to return.

bridge_score <- function(model, newdata, args = list()) UseMethod("bridge_score")

bridge_score.lm <- function(model, newdata, args = list()) {
  call_predict(model, newdata, list(), args)
}

# Probabilities / means, not the link scale.
bridge_score.glm <- function(model, newdata, args = list()) {
  call_predict(model, newdata, list(type = "response"), args)
}

# Class labels for classification, numbers for regression; args list(type = "prob") gives the probability matrix.
bridge_score.randomForest <- function(model, newdata, args = list()) {
  if (is.null(model$forest)) stop("the randomForest was saved without its forest: refit with keep.forest = TRUE")
  vars <- if (is.null(model$terms)) names(model$forest$ncat) else plain_predictors(model$terms)
  refuse_character_columns(newdata, vars, "randomForest")
  call_predict(model, newdata, list(), args)
}

# One thread per call: the pool runs one worker process per core already. args can raise num.threads.
# Probability forests give a matrix with the classes as colnames.
bridge_score.ranger <- function(model, newdata, args = list()) {
  if (is.null(model$forest)) stop("the ranger model was saved without its forest: refit with write.forest = TRUE")
  if (is.null(model$forest$covariate.levels)) {
    refuse_character_columns(newdata, model$forest$independent.variable.names,
                             "ranger (without respect.unordered.factors = \"order\")")
  }
  call_predict(model, newdata, list(num.threads = 1), args, data_arg = "data")$predictions
}

# gbm needs n.trees. Default: the best iteration the fit can tell, as predict.gbm itself picks it (but without
# its message): the held-out test error when train.fraction < 1, else the cross-validation error when cv.error
# exists, else all trees. The out-of-bag estimate is not used (gbm itself warns that it underestimates).
# type = "response": probabilities for bernoulli, counts for poisson. A multinomial fit gives an n x K x 1 array:
# it becomes an n x K matrix with the classes as colnames.
bridge_score.gbm <- function(model, newdata, args = list()) {
  pred <- call_predict(model, newdata, list(n.trees = gbm_best_trees(model), type = "response"), args)
  if (length(dim(pred)) == 3) {
    if (dim(pred)[3] != 1) stop("gbm gave predictions for several n.trees: give one n.trees in predict_args")
    pred <- matrix(pred[, , 1], nrow = dim(pred)[1], dimnames = list(NULL, dimnames(pred)[[2]]))
  }
  pred
}

gbm_best_trees <- function(model) {
  best <- integer(0)
  if (model$train.fraction < 1) best <- which.min(model$valid.error)
  if (length(best) == 0 && !is.null(model$cv.error)) best <- which.min(model$cv.error)
  if (length(best) == 0) best <- length(model$train.error)
  best
}

# Class labels for classification trees, the fitted value otherwise.
bridge_score.rpart <- function(model, newdata, args = list()) {
  type <- if (identical(model$method, "class")) "class" else "vector"
  call_predict(model, newdata, list(type = type), args)
}

# predict.svm drops rows with NA by default (na.omit), which would shift every later answer by a row: na.exclude
# keeps one answer (NA) per input row. args list(probability = TRUE) or list(decision.values = TRUE) return
# that matrix instead of the labels.
bridge_score.svm <- function(model, newdata, args = list()) {
  if (!is.null(model$terms)) refuse_character_columns(newdata, plain_predictors(model$terms), "e1071 svm")
  pred <- call_predict(model, newdata, list(na.action = stats::na.exclude), args)
  if (isTRUE(args$probability)) {
    if (is.null(attr(pred, "probabilities"))) stop("the svm was fitted without probability = TRUE: it gives no probabilities")
    return(attr(pred, "probabilities"))
  }
  if (isTRUE(args$decision.values)) return(attr(pred, "decision.values"))
  pred
}

# MASS's lda and qda predict a list ($class, $posterior, and for lda $x): the labels by default; args
# list(type = "posterior") gives the probability matrix, list(type = "x") lda's discriminants.
bridge_score.lda <- function(model, newdata, args = list()) pick_part(model, newdata, args, "class")
bridge_score.qda <- bridge_score.lda

pick_part <- function(model, newdata, args, default) {
  part <- if (is.null(args$type)) default else args$type
  pred <- call_predict(model, newdata, list(), args[setdiff(names(args), "type")])
  if (!is.character(part) || length(part) != 1 || !(part %in% names(pred))) {
    stop(sprintf("predict_args type must be one of %s for class '%s'",
                 paste0('"', names(pred), '"', collapse = ", "), class(model)[1]))
  }
  pred[[part]]
}

# nnet classifiers (nnet.formula, multinom): labels, not the probability matrix of type = "raw".
bridge_score.nnet <- function(model, newdata, args = list()) {
  defaults <- if (is.null(model$lev)) list() else list(type = "class")
  call_predict(model, newdata, defaults, args)
}

# caret's knn3: labels, not the probability matrix of its default type = "prob".
bridge_score.knn3 <- function(model, newdata, args = list()) {
  call_predict(model, newdata, list(type = "class"), args)
}

# lme4's glmer fits: the response scale, as for glm.
bridge_score.glmerMod <- function(model, newdata, args = list()) {
  call_predict(model, newdata, list(type = "response"), args, data_arg = NULL)
}

# earth gives an n x 1 matrix named after the response for one response: a vector, as for lm.
bridge_score.earth <- function(model, newdata, args = list()) {
  pred <- call_predict(model, newdata, list(), args)
  if (is.matrix(pred) && ncol(pred) == 1) pred[, 1] else pred
}

bridge_score.default <- function(model, newdata, args = list()) {
  if (!has_predict_method(model)) stop(no_predict_message(model, "models/<name>.R"))
  call_predict(model, newdata, list(), args, data_arg = NULL)
}

no_predict_message <- function(model, script) {
  sprintf("model class '%s' has no predict() method the bridge knows; write score(model, newdata) in %s",
          class(model)[1], script)
}

# Why bridge_score() cannot score this model, or NULL: checked when a model without a script is loaded, so a
# model that could never answer fails at load rather than on every request.
score_problem <- function(model, script) {
  if (inherits(model, "randomForest") && is.null(model$forest)) {
    return("the randomForest model was saved without its forest: refit with keep.forest = TRUE")
  }
  if (inherits(model, "ranger") && is.null(model$forest)) {
    return("the ranger model was saved without its forest: refit with write.forest = TRUE")
  }
  if (inherits(model, c("glmnet", "cv.glmnet"))) return(glmnet_message(model, script))
  own <- any(vapply(model_classes(model), function(cl) {
    !is.null(utils::getS3method("bridge_score", cl, optional = TRUE, envir = environment(bridge_score)))
  }, logical(1)))
  if (own || has_predict_method(model)) NULL else no_predict_message(model, script)
}

# glmnet's predict() takes a matrix newx (in the columns' training order) and a penalty s: neither is in the
# object in a form a bridge could pick for the user.
glmnet_message <- function(model, script) {
  beta <- if (inherits(model, "cv.glmnet")) model$glmnet.fit$beta else model$beta
  if (is.list(beta)) beta <- beta[[1]]
  vars <- paste0('"', rownames(beta), '"', collapse = ", ")
  sprintf(paste0("glmnet's predict() needs a matrix newx and a penalty s, which the bridge cannot choose: ",
                 "write score(model, newdata) in %s, e.g. score <- function(model, newdata) ",
                 "predict(model, newx = as.matrix(newdata[, c(%s)]), s = %s)[, 1], ",
                 "and declare those columns in the model's .json"),
          script, vars, if (inherits(model, "cv.glmnet")) '"lambda.min"' else "0.01")
}

has_predict_method <- function(model) {
  s3 <- vapply(model_classes(model), function(cl) !is.null(utils::getS3method("predict", cl, optional = TRUE)), logical(1))
  any(s3) || !is.null(s4_predict_generic(model))
}

# An S4 class's predict() is a method of an S4 generic that lives in the package that set it (stats::predict
# does not dispatch on S4 classes), so look for one in the namespace of the class's package and in globalenv.
s4_predict_generic <- function(model) {
  if (!isS4(model)) return(NULL)
  pkg <- attr(class(model), "package")
  places <- list(globalenv())
  if (!is.null(pkg) && pkg %in% loadedNamespaces()) places <- c(list(asNamespace(pkg)), places)
  for (where in places) {
    generic <- methods::getGeneric("predict", mustFind = FALSE, where = where)
    if (is.null(generic)) next
    method <- methods::selectMethod("predict", class(model), optional = TRUE, fdef = generic)
    if (!is.null(method) && !methods::is(method, "derivedDefaultMethod")) return(generic)
  }
  NULL
}

# predict(model, <data_arg> = newdata, <args over defaults>) through do.call, with warnings as errors
# (data_arg NULL: newdata unnamed, in second place). The call names model and newdata as symbols, so an error
# message shows predict(model, newdata = newdata, ...) rather than the deparsed model.
call_predict <- function(model, newdata, defaults, args, data_arg = "newdata") {
  args <- merge_args(defaults, args)
  predict <- s4_predict_generic(model)
  if (is.null(predict)) predict <- stats::predict
  data <- list(quote(newdata))
  if (!is.null(data_arg)) names(data) <- data_arg
  call_args <- c(list(quote(model)), data, args)
  stop_on_warning(do.call("predict", call_args))
}

merge_args <- function(defaults, args) {
  args <- as.list(args)
  if (length(args) > 0 && (is.null(names(args)) || any(names(args) == ""))) {
    stop("predict_args must be a JSON object of named predict() arguments")
  }
  c(args, defaults[setdiff(names(defaults), names(args))])
}

stop_on_warning <- function(expr) {
  withCallingHandlers(expr, warning = function(w) {
    stop(sprintf("R warned while predicting, so the prediction is not returned: %s", conditionMessage(w)),
         call. = FALSE)
  })
}

# Tree ensembles and svm turn a character column into codes of the values present in the request itself
# (factor() / data.matrix() of newdata), so the same string gets a different code in a different request:
# predictions change silently. Refuse, and say how to declare the column.
refuse_character_columns <- function(newdata, vars, who) {
  is_chr <- vapply(newdata, is.character, logical(1))
  bad <- intersect(vars, names(newdata)[is_chr])
  if (length(bad) > 0) {
    stop(sprintf(paste0("column '%s' is character, and %s codes character columns by the values present in ",
                        "each request, which mispredicts silently: declare it as a factor with its training ",
                        "levels in the model's .json schema"), bad[1], who))
  }
}

# Variables that enter a formula as they are (dataClasses is keyed by variable expressions).
plain_predictors <- function(tt) {
  classes <- attr(tt, "dataClasses")
  intersect(names(classes), all.vars(delete.response(tt)))
}
