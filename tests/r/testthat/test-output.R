# bridge_output(): plain vectors and tables of exactly n rows, or an error saying what score() returned.

test_that("vectors keep their type, lose names; factors become labels", {
  expect_identical(bridge_output(c(a = 1.5, b = NA), 2), list(kind = "vector", names = NULL, values = list(c(1.5, NA))))
  expect_identical(bridge_output(1:3, 3)$values[[1]], 1:3)
  expect_identical(bridge_output(c(TRUE, NA), 2)$values[[1]], c(TRUE, NA))
  expect_identical(bridge_output(factor(c("b", NA, "a"), levels = c("b", "a")), 3)$values[[1]], c("b", NA, "a"))
  # a factor's levels travel along, in R's order, also the ones no row has (the R client rebuilds the factor)
  expect_identical(bridge_output(factor("b", levels = c("b", "a", "c")), 1)$levels, c("b", "a", "c"))
  expect_null(bridge_output(1.5, 1)$levels)
  expect_identical(bridge_output(array(c(2, 3), dim = 2, dimnames = list(c("x", "y"))), 2)$values[[1]], c(2, 3))
})

test_that("real predictions: randomForest labels, glm probabilities", {
  m <- fitted_model("rf_class")
  out <- bridge_output(bridge_score(m, rows), nrow(rows))
  expect_identical(out$values[[1]], as.character(predict(m, rows)))
  g <- fitted_model("glm")
  expect_identical(bridge_output(bridge_score(g, rows), nrow(rows))$values[[1]],
                   unname(predict(g, rows, type = "response")))
})

test_that("a matrix with column names is a table; without, one column is a vector and more are V1, V2", {
  p <- bridge_score(fitted_model("ranger_prob"), rows)
  out <- bridge_output(p, nrow(rows))
  expect_identical(out$kind, "table")
  expect_identical(out$names, c("low", "high"))
  expect_identical(out$values, list(unname(p[, "low"]), unname(p[, "high"])))
  votes <- bridge_score(fitted_model("rf_class"), rows, list(type = "prob")) # class c("matrix", "votes")
  expect_identical(bridge_output(votes, nrow(rows))$names, c("low", "high"))
  expect_identical(bridge_output(matrix(1:3, ncol = 1), 3), list(kind = "vector", names = NULL, values = list(1:3)))
  t <- bridge_output(matrix(c(1, 2, 3, 4), ncol = 2), 2)
  expect_identical(t$names, c("V1", "V2"))
  expect_identical(t$values, list(c(1, 2), c(3, 4)))
  expect_identical(bridge_output(matrix(5, ncol = 1, dimnames = list(NULL, "fit")), 1)$kind, "table")
})

test_that("a data.frame is a table, factor columns as labels", {
  df <- data.frame(fit = c(1.5, 2), lwr = c(1L, 2L), cls = factor(c("a", "b")), ok = c(TRUE, FALSE))
  out <- bridge_output(df, 2)
  expect_identical(out, list(kind = "table", names = c("fit", "lwr", "cls", "ok"),
                             values = list(c(1.5, 2), c(1L, 2L), c("a", "b"), c(TRUE, FALSE))))
  interval <- predict(fitted_model("lm"), rows, interval = "prediction")
  expect_identical(bridge_output(interval, nrow(rows))$names, c("fit", "lwr", "upr"))
})

test_that("row counts must match exactly", {
  expect_error(bridge_output(c(1, 2), 3),
               "score\\(\\) returned a double vector of length 2; it must return a vector, factor, matrix or data.frame with one row per input row \\(n = 3\\)")
  expect_error(bridge_output(matrix(1:4, 2, dimnames = list(NULL, c("a", "b"))), 3), "matrix of dimensions 2 x 2")
  expect_error(bridge_output(data.frame(a = 1:2), 1), "a data.frame with 2 rows and 1 columns")
  expect_error(bridge_output(factor("a"), 0), "a factor of length 1")
})

test_that("anything that is not a vector, factor, matrix or data.frame is an error naming it", {
  expect_error(bridge_output(list(1, 2), 2), "returned a list of length 2")
  expect_error(bridge_output(NULL, 1), "returned NULL")
  expect_error(bridge_output(fitted_model("lm"), 1), "a list of length .* \\(class 'lm'\\)")
  expect_error(bridge_output(methods::getClass("numeric"), 1), "an S4 object of class 'classRepresentation'")
  expect_error(bridge_output(array(1:8, c(2, 2, 2)), 2), "integer array of dimensions 2 x 2 x 2")
  expect_error(bridge_output(c(1i, 2i), 2), "a complex vector")
  expect_error(bridge_output(Sys.Date() + 0:1, 2), "an object of class 'Date'")
  expect_error(bridge_output(function(x) x, 1), "an object of type 'closure'")
})

test_that("table columns must be wire types with unique names", {
  df <- data.frame(a = 1:2)
  df$when <- Sys.Date() + 0:1
  expect_error(bridge_output(df, 2), "column 'when' as an object of class 'Date'")
  expect_error(bridge_output(matrix(1:4, 2, dimnames = list(NULL, c("a", "a"))), 2), "its own non-empty name")
  expect_error(bridge_output(data.frame(), 0), "data.frame with 0 rows and 0 columns")
})

test_that("a list of parts with one row each per input row is a table (se.fit), scalars left out", {
  m <- fitted_model("lm")
  p <- predict(m, rows, se.fit = TRUE)
  out <- bridge_output(p, nrow(rows))
  expect_identical(out$kind, "table")
  expect_identical(out$names, c("fit", "se.fit"))
  expect_equal(out$values[[2]], unname(p$se.fit))
  one <- bridge_output(predict(m, rows[1, ], se.fit = TRUE), 1)
  expect_identical(one$names, c("fit", "se.fit")) # the same shape for one row: df is never a column
  ci <- bridge_output(predict(m, rows, se.fit = TRUE, interval = "confidence"), nrow(rows))
  expect_identical(ci$names, c("fit.fit", "fit.lwr", "fit.upr", "se.fit"))
  expect_error(bridge_output(list(fit = 1:3, x = 1:2), 3), "parts \\$fit\\[3\\], \\$x\\[2\\]")
})
