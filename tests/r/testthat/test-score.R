# bridge_score(): the same numbers and labels as the class's own predict() with the serving arguments,
# predict_args merged over them, warnings as errors, one answer per input row.

test_that("lm and glm: predict(), glm on the response scale; args win over defaults", {
  m <- fitted_model("lm")
  expect_equal(bridge_score(m, rows), predict(m, rows))
  g <- fitted_model("glm")
  p <- bridge_score(g, rows)
  expect_equal(p, predict(g, rows, type = "response"))
  expect_true(all(p > 0 & p < 1))
  expect_equal(bridge_score(g, rows, list(type = "link")), predict(g, rows))
})

test_that("lm maps a character column by its training levels and refuses an unseen one", {
  m <- fitted_model("lm")
  one <- rows[rows$ch == "v", ][1, ]
  expect_equal(bridge_score(m, one), predict(m, rows)[rownames(one)], ignore_attr = TRUE)
  bad <- rows[1:2, ]
  bad$ch <- c("u", "w")
  expect_error(bridge_score(m, bad), "new level")
})

test_that("randomForest: labels for classification, probabilities on request, numbers for regression", {
  m <- fitted_model("rf_class")
  p <- bridge_score(m, rows)
  expect_s3_class(p, "factor")
  expect_equal(p, predict(m, rows))
  prob <- bridge_score(m, rows, list(type = "prob"))
  expect_equal(prob, predict(m, rows, type = "prob"))
  expect_equal(colnames(prob), c("low", "high"))
  r <- fitted_model("rf_xy")
  expect_equal(bridge_score(r, predictors(c("x1", "f", "o"))), predict(r, predictors(c("x1", "f", "o"))))
})

test_that("randomForest and ranger refuse character columns they would code per request", {
  m <- fitted_model("rf_xy_chr")
  x <- predictors(c("x1", "ch"))
  # what the refusal prevents: the same rows get other predictions when the request has other values
  only_v <- x[x$ch == "v", ]
  expect_false(isTRUE(all.equal(unname(predict(m, only_v)), unname(predict(m, x)[rownames(only_v)]))))
  expect_error(bridge_score(m, x), "column 'ch' is character, and randomForest codes")
  rg <- ranger::ranger(y ~ x1 + ch, train, num.trees = 5, seed = 1)
  expect_error(bridge_score(rg, x), "column 'ch' is character, and ranger")
  ro <- fitted_model("ranger_order") # "order" mode matches characters by label: fine
  expect_equal(bridge_score(ro, rows[, c("x1", "f", "ch")]), predict(ro, rows, num.threads = 1)$predictions)
})

test_that("ranger: predictions, probability matrix with class colnames, class labels", {
  m <- fitted_model("ranger_reg")
  expect_equal(bridge_score(m, rows), predict(m, rows, num.threads = 1)$predictions)
  expect_equal(bridge_score(m, rows, list(num.threads = 2)), predict(m, rows)$predictions)
  p <- bridge_score(fitted_model("ranger_prob"), rows)
  expect_true(is.matrix(p))
  expect_equal(colnames(p), c("low", "high"))
  expect_equal(rowSums(p), rep(1, nrow(rows)))
  k <- bridge_score(fitted_model("ranger_class"), rows)
  expect_equal(k, predict(fitted_model("ranger_class"), rows)$predictions)
  expect_equal(levels(k), c("p", "q", "r"))
})

test_that("gbm: n.trees is the best test iteration, else the best cv iteration, else all trees", {
  t <- fitted_model("gbm_test")
  expect_equal(gbm_best_trees(t), which.min(t$valid.error))
  expect_lt(gbm_best_trees(t), 60)
  expect_equal(gbm_best_trees(t), gbm::gbm.perf(t, method = "test", plot.it = FALSE), ignore_attr = TRUE)
  expect_equal(bridge_score(t, rows), predict(t, rows, n.trees = which.min(t$valid.error)))
  cv <- fitted_model("gbm_cv")
  expect_equal(gbm_best_trees(cv), which.min(cv$cv.error))
  expect_equal(bridge_score(cv, rows), predict(cv, rows, n.trees = which.min(cv$cv.error)))
  all <- fitted_model("gbm_all")
  expect_equal(gbm_best_trees(all), 40)
  expect_equal(bridge_score(all, rows), predict(all, rows, n.trees = 40))
  expect_equal(bridge_score(all, rows, list(n.trees = 5)), predict(all, rows, n.trees = 5))
})

test_that("gbm: bernoulli gives probabilities, multinomial a matrix with class colnames", {
  b <- fitted_model("gbm_bern")
  expect_equal(bridge_score(b, rows), predict(b, rows, n.trees = 30, type = "response"))
  m <- fitted_model("gbm_multi")
  p <- bridge_score(m, rows)
  expect_equal(dim(p), c(nrow(rows), 3))
  expect_equal(colnames(p), c("p", "q", "r"))
  expect_equal(p, predict(m, rows, n.trees = 20, type = "response")[, , 1])
  expect_equal(dim(bridge_score(m, rows[1, ])), c(1, 3))
  expect_error(bridge_score(m, rows, list(n.trees = c(5, 10))), "give one n.trees")
})

test_that("a coercion warning inside predict() is an error", {
  m <- fitted_model("gbm_all")
  x <- rows
  x$x1 <- ifelse(seq_len(nrow(x)) == 2, "n/a", as.character(x$x1)) # gbm: NA with a warning, predicts anyway
  expect_warning(predict(m, x, n.trees = 40), "NAs introduced by coercion")
  expect_error(bridge_score(m, x), "R warned while predicting.*NAs introduced by coercion")
})

test_that("rpart: class labels for classification trees, values for regression trees", {
  m <- fitted_model("rpart_class")
  expect_equal(bridge_score(m, rows), predict(m, rows, type = "class"))
  expect_equal(bridge_score(m, rows, list(type = "prob")), predict(m, rows, type = "prob"))
  r <- fitted_model("rpart_anova")
  expect_equal(bridge_score(r, rows), predict(r, rows))
})

test_that("svm: labels, NA rows kept in place, probabilities on request", {
  m <- fitted_model("svm")
  expect_equal(bridge_score(m, rows), predict(m, rows))
  x <- rows
  x$x1[3] <- NA
  expect_length(predict(m, x), nrow(x) - 1) # what e1071 does by default
  p <- bridge_score(m, x)
  expect_length(p, nrow(x))
  expect_true(is.na(p[3]))
  expect_equal(p[-3], predict(m, rows)[-3])
  prob <- bridge_score(m, x, list(probability = TRUE))
  expect_equal(dim(prob), c(nrow(x), 2))
  expect_true(all(is.na(prob[3, ])))
  expect_setequal(colnames(prob), c("low", "high"))
  dv <- bridge_score(m, rows, list(decision.values = TRUE))
  expect_equal(nrow(dv), nrow(rows))
  xy <- fitted_model("svm_xy")
  expect_equal(bridge_score(xy, predictors(c("x1", "x2"))), predict(xy, as.matrix(predictors(c("x1", "x2")))))
})

test_that("default: any class with a predict() method R can find", {
  skip_if_not_installed("nnet")
  m <- quietly(nnet::multinom(k ~ x1 + f, train))
  expect_equal(bridge_score(m, rows), predict(m, rows))
  expect_equal(bridge_score(m, rows, list(type = "probs")), predict(m, rows, type = "probs"))
  expect_null(score_problem(m, "models/mn.R"))
})

test_that("default: newdata goes in second place, whatever the method calls it", {
  registerS3method("predict", "bridge_positional", function(object, x, ...) x$x1 * object$k)
  m <- structure(list(k = 2), class = "bridge_positional")
  expect_equal(bridge_score(m, rows), rows$x1 * 2)
})

test_that("default: an S4 class whose package set a predict() method", {
  skip_if_not_installed("kernlab")
  set.seed(3)
  m <- kernlab::ksvm(cls ~ x1 + x2, data = train, kernel = "vanilladot", kpar = list())
  expect_true(isS4(m))
  expect_null(score_problem(m, "models/k.R"))
  expect_equal(bridge_score(m, rows), kernlab::predict(m, rows))
})

test_that("default: no predict() method is an error that says to write score()", {
  obj <- structure(list(), class = "bridge_nothing")
  expect_match(score_problem(obj, "models/odd.R"), "write score(model, newdata) in models/odd.R", fixed = TRUE)
  expect_error(bridge_score(obj, rows),
               "model class 'bridge_nothing' has no predict\\(\\) method the bridge knows; write score\\(model, newdata\\) in models/<name>.R")
})

test_that("predict_args must be named", {
  expect_error(bridge_score(fitted_model("lm"), rows, list("response")), "JSON object of named")
  expect_equal(merge_args(list(type = "a", n = 1), list(type = "b")), list(type = "b", n = 1))
})

test_that("svm: probabilities from a fit without them: e1071 warns, so an error, not labels", {
  expect_error(bridge_score(fitted_model("svm_factor"), rows, list(probability = TRUE)),
               "trained using `probability = TRUE`")
})

test_that("MASS lda/qda: labels by default, posterior or x by predict_args type", {
  m <- MASS::lda(cls ~ x1 + x2 + f, data = train)
  expect_equal(bridge_score(m, rows), predict(m, rows)$class)
  expect_equal(bridge_score(m, rows, list(type = "posterior")), predict(m, rows)$posterior)
  expect_error(bridge_score(m, rows, list(type = "probs")), 'type must be one of "class", "posterior", "x"')
  q <- MASS::qda(cls ~ x1 + x2, data = train)
  expect_equal(bridge_score(q, rows), predict(q, rows)$class)
})

test_that("classifiers whose predict() gives probabilities by default answer labels", {
  set.seed(3)
  n <- nnet::nnet(cls ~ x1 + x2, data = train, size = 2, trace = FALSE)
  expect_equal(bridge_score(n, rows), predict(n, rows, type = "class"))
  expect_equal(bridge_score(n, rows, list(type = "raw")), predict(n, rows, type = "raw"))
  r <- nnet::nnet(y ~ x1 + x2, data = train, size = 2, linout = TRUE, trace = FALSE)
  expect_equal(bridge_score(r, rows), predict(r, rows))
  skip_if_not_installed("caret")
  k <- caret::knn3(cls ~ x1 + x2, data = train)
  expect_equal(bridge_score(k, rows), predict(k, rows, type = "class"))
})

test_that("earth: one response is a vector; glmnet fails at load saying what score() to write", {
  skip_if_not_installed("earth")
  e <- earth::earth(y ~ x1 + x2, data = train)
  expect_equal(bridge_score(e, rows), predict(e, rows)[, 1])
  skip_if_not_installed("glmnet")
  g <- glmnet::glmnet(as.matrix(train[, c("x1", "x2")]), train$y)
  expect_match(score_problem(g, "g.R"),
               'write score\\(model, newdata\\) in g.R, e.g. .*newx = as.matrix\\(newdata\\[, c\\("x1", "x2"\\)\\]\\), s = 0.01')
})
