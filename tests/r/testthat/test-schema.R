# bridge_schema(): columns in predictor order, types and levels (in training order) read from the object,
# NULL where the object does not keep them.

col <- function(schema, name) Filter(function(c) c$name == name, schema)[[1]]
col_names <- function(schema) vapply(schema, `[[`, "", "name")
col_types <- function(schema) vapply(schema, `[[`, "", "type")

test_that("lm: every column type, levels in training order, integer from the model frame", {
  s <- bridge_schema(fitted_model("lm"))
  expect_equal(col_names(s), c("x1", "f", "o", "ch", "i", "l"))
  expect_equal(col_types(s), c("numeric", "factor", "factor", "character", "integer", "logical"))
  expect_equal(col(s, "f"), list(name = "f", type = "factor", levels = c("b", "a", "c"), ordered = FALSE))
  expect_equal(col(s, "o")$levels, c("lo", "mid", "hi"))
  expect_true(col(s, "o")$ordered)
  expect_equal(col(s, "ch")$levels, c("u", "v"))
  expect_null(col(s, "x1")$levels)
})

test_that("lm with a transformed variable says nothing rather than guess", {
  expect_null(bridge_schema(fitted_model("lm_log")))
})

test_that("glm types a transformed variable from the training data it keeps", {
  s <- bridge_schema(fitted_model("glm_log"))
  expect_equal(col_names(s), c("x2", "f"))
  expect_equal(col_types(s), c("numeric", "factor"))
  expect_equal(col(s, "f")$levels, c("b", "a", "c"))
  expect_equal(col_types(bridge_schema(fitted_model("glm"))), c("numeric", "factor", "character"))
})

test_that("randomForest formula fit: terms plus forest levels; ordered factors lose their levels", {
  s <- bridge_schema(fitted_model("rf_class"))
  expect_equal(col_names(s), c("x1", "f", "i"))
  expect_equal(col_types(s), c("numeric", "factor", "numeric"))
  expect_equal(col(s, "f")$levels, c("b", "a", "c"))
  expect_null(bridge_schema(fitted_model("rf_ordered")))
})

test_that("randomForest x/y fit: ncat and forest$xlevels", {
  s <- bridge_schema(fitted_model("rf_xy"))
  expect_equal(col_names(s), c("x1", "f", "o"))
  expect_equal(col(s, "f"), list(name = "f", type = "factor", levels = c("b", "a", "c"), ordered = FALSE))
  expect_equal(col(s, "o"), list(name = "o", type = "factor", levels = c("lo", "mid", "hi"), ordered = TRUE))
  expect_equal(col(s, "x1")$type, "numeric")
})

test_that("ranger: levels only with respect.unordered.factors = 'order', else NULL", {
  expect_null(bridge_schema(fitted_model("ranger_reg")))
  expect_null(bridge_schema(fitted_model("ranger_prob")))
  s <- bridge_schema(fitted_model("ranger_order"))
  expect_equal(col_names(s), c("x1", "f", "ch"))
  expect_equal(col_types(s), c("numeric", "factor", "factor"))
  # ranger keeps the levels in its own split order (by mean response), not the training order
  expect_setequal(col(s, "f")$levels, c("a", "b", "c"))
  expect_equal(col(s, "f")$levels, fitted_model("ranger_order")$forest$covariate.levels$f)
  expect_equal(col(s, "ch")$levels, c("u", "v"))
})

test_that("gbm: var.type and var.levels, ordered factors included", {
  s <- bridge_schema(fitted_model("gbm_all"))
  expect_equal(col_names(s), c("x1", "f", "o"))
  expect_equal(col(s, "x1"), list(name = "x1", type = "numeric", levels = NULL, ordered = FALSE))
  expect_equal(col(s, "f")$levels, c("b", "a", "c"))
  expect_equal(col(s, "o"), list(name = "o", type = "factor", levels = c("lo", "mid", "hi"), ordered = TRUE))
})

test_that("rpart: terms plus its xlevels attribute", {
  s <- bridge_schema(fitted_model("rpart_class"))
  expect_equal(col_names(s), c("x1", "f", "ch", "o"))
  expect_equal(col_types(s), c("numeric", "factor", "character", "factor"))
  expect_equal(col(s, "ch")$levels, c("u", "v"))
  expect_true(col(s, "o")$ordered)
})

test_that("svm: formula fits without factors, x/y fits by support-vector columns; factors make it NULL", {
  expect_equal(col_types(bridge_schema(fitted_model("svm"))), c("numeric", "numeric", "logical"))
  expect_null(bridge_schema(fitted_model("svm_factor")))
  s <- bridge_schema(fitted_model("svm_xy"))
  expect_equal(col_names(s), c("x1", "x2"))
  expect_equal(col_types(s), c("numeric", "numeric"))
})

test_that("default: terms when the object has them, else NULL", {
  fit <- fitted_model("lm")
  obj <- structure(list(terms = terms(fit), xlevels = fit$xlevels), class = "bridge_unknown")
  s <- bridge_schema(obj)
  expect_equal(col_names(s), c("x1", "f", "o", "ch", "i", "l"))
  expect_equal(col(s, "i")$type, "numeric") # no data kept: an integer column is only known as numeric
  expect_null(bridge_schema(structure(list(a = 1), class = "bridge_unknown")))
  expect_null(bridge_schema(function(x) x))
  expect_null(bridge_schema(structure(list(terms = terms(fit)), class = "bridge_unknown"))) # levels lost
})

test_that("Date, POSIXct and difftime columns are typed from the data the model kept, tz and units too", {
  d <- train
  d$day <- as.Date("2024-01-01") + seq_len(nrow(d))
  d$at <- as.POSIXct("2024-01-01 12:00", tz = "Europe/Berlin") + seq_len(nrow(d)) * 3600
  d$gap <- as.difftime(seq_len(nrow(d)) / 2, units = "hours")
  s <- bridge_schema(stats::lm(y ~ x1 + day + at + gap, data = d))
  expect_equal(s[[2]], list(name = "day", type = "date", levels = NULL, ordered = FALSE))
  expect_equal(s[[3]], list(name = "at", type = "datetime", levels = NULL, ordered = FALSE, tz = "Europe/Berlin"))
  expect_equal(s[[4]], list(name = "gap", type = "difftime", levels = NULL, ordered = FALSE, units = "hours"))
  d$at <- as.POSIXct(format(d$at), tz = "")
  expect_identical(bridge_schema(stats::lm(y ~ at, data = d))[[1]]$tz, "UTC")
})

test_that("mixed models: fixed and grouping variables from the frame they keep", {
  skip_if_not_installed("lme4")
  s <- bridge_schema(lme4::lmer(y ~ x1 + (1 | f), data = train))
  expect_identical(vapply(s, `[[`, "", "name"), c("x1", "f"))
  expect_identical(s[[2]]$levels, c("b", "a", "c"))
  l <- bridge_schema(nlme::lme(y ~ x1, random = ~ 1 | f, data = train))
  expect_identical(vapply(l, `[[`, "", "type"), c("numeric", "factor"))
})
