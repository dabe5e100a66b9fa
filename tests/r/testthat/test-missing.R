# r/missing.R: NA as R's predict() treats it, one answer per row, and the classes that cannot take NA.

test_that("classes whose predict() fails on NA say so; the others take NA", {
  expect_null(na_problem(fitted_model("lm")))
  expect_null(na_problem(fitted_model("rf_class")))
  expect_match(na_problem(fitted_model("rf_xy")), "randomForest fitted without a formula cannot predict")
  expect_match(na_problem(fitted_model("ranger_reg")), "ranger cannot predict rows with missing values")
  expect_match(na_problem(MASS::lda(cls ~ x1 + x2, train)), "lda and qda cannot predict")
  skip_if_not_installed("lme4")
  expect_match(na_problem(lme4::lmer(y ~ x1 + (1 | f), data = train)), "lme4's lmer and glmer")
})

test_that("partykit: NA only when rows with NA go down the majority branch", {
  skip_if_not_installed("partykit")
  random <- partykit::ctree(y ~ x1 + x2, data = train)
  expect_match(na_problem(random), "random branch")
  majority <- partykit::ctree(y ~ x1 + x2, data = train, control = partykit::ctree_control(majority = TRUE))
  expect_null(na_problem(majority))
})

test_that("a predict() that drops incomplete rows gets NA in their place, the others unchanged", {
  drop_na <- function(d) d$x1[!is.na(d$x1)] * 2
  d <- data.frame(x1 = c(1, NA, 3, NA))
  expect_equal(one_answer_per_row(drop_na, d), c(2, NA, 6, NA))
  expect_equal(one_answer_per_row(drop_na, data.frame(x1 = c(NA_real_, NA))), c(NA_real_, NA))
  labels <- function(d) factor(c("a", "b", "a")[seq_len(sum(!is.na(d$x1)))], levels = c("a", "b"))
  expect_equal(one_answer_per_row(labels, d), factor(c("a", NA, "b", NA), levels = c("a", "b")))
  m <- function(d) cbind(p = d$x1[!is.na(d$x1)], q = 1)
  expect_equal(one_answer_per_row(m, d)[, "p"], c(1, NA, 3, NA))
  parts <- function(d) list(fit = d$x1[!is.na(d$x1)], se.fit = rep(0.5, sum(!is.na(d$x1))), df = 10)
  expect_equal(one_answer_per_row(parts, d)$fit, c(1, NA, 3, NA))
  # A row count wrong for another reason is left for bridge_output to report.
  expect_equal(one_answer_per_row(function(d) 1, d), 1)
})

test_that("kernlab drops rows with NA; the bridge answers NA in their place", {
  skip_if_not_installed("kernlab")
  set.seed(1)
  m <- kernlab::ksvm(cls ~ x1 + x2, data = train)
  d <- rows[1:4, c("x1", "x2")]
  d$x1[2] <- NA
  expect_length(kernlab::predict(m, d), 3)
  dir <- models_dir(list(k = m))
  out <- bridge_load("k", file.path(dir, "k.rds"))$score(d)
  complete <- as.character(kernlab::predict(m, d[-2, ]))
  expect_equal(as.character(out), c(complete[1], NA, complete[2:3]))
})
