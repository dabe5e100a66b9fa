# r/packages.R: the packages a model needs, found from the object; never a parent class's package instead.

test_that("a subclass of a known class gets its own package: mgcv's gam is not scored by predict.lm", {
  skip_if_not_installed("mgcv")
  m <- mgcv::gam(y ~ s(x1) + f, data = train)
  expect_identical(class(m)[1:3], c("gam", "glm", "lm"))
  expect_identical(model_packages(m), "mgcv")
  dir <- models_dir(list(g = m))
  b <- bridge_load("g", file.path(dir, "g.rds"))
  expect_equal(b$score(rows), mgcv::predict.gam(m, rows, type = "response"))
})

test_that("a class without a predict method of its own loads the package of its other methods", {
  m <- suppressWarnings(MASS::glm.nb(i ~ x1 + f, data = train))
  expect_identical(model_packages(m), c("MASS", "stats"))
})

test_that("S4 classes: the class's package, and an S3 predict method of a superclass counts (lme4)", {
  skip_if_not_installed("lme4")
  m <- lme4::lmer(y ~ x1 + (1 | f), data = train)
  expect_true("merMod" %in% model_classes(m))
  expect_identical(model_packages(m), "lme4")
  expect_true(has_predict_method(m))
  expect_null(score_problem(m, "m.R"))
})

test_that("functions the formula calls are found in the package that exports them (splines::ns)", {
  m <- stats::lm(y ~ splines::ns(x1, df = 3) + f, data = train)
  expect_identical(formula_packages(m), character(0)) # pkg::f loads pkg by itself
  tt <- stats::terms(y ~ ns(x1, df = 3) + bs(x2) + log(x2) + f)
  expect_identical(exporting_packages("ns"), "splines")
  expect_true(all(c("ns", "bs", "log") %in% called_functions(list(tt))))
  fake <- structure(list(terms = tt), class = "bridge_fake")
  registerS3method("terms", "bridge_fake", function(x, ...) x$terms)
  expect_identical(formula_packages(fake), "splines")
  nowhere <- structure(list(terms = stats::terms(y ~ bridgeNoSuchFunction(x1))), class = "bridge_fake")
  expect_error(formula_packages(nowhere), "its formula calls bridgeNoSuchFunction\\(\\), which no installed package exports")
})

test_that("a model whose formula calls ns() loads and predicts in a session without splines attached", {
  m <- local({
    ns <- splines::ns
    stats::lm(y ~ ns(x1, df = 3) + f, data = train)
  })
  environment(m$terms) <- globalenv()
  attr(m$model, "terms") <- m$terms
  dir <- models_dir(list(s = m))
  expect_false("package:splines" %in% search())
  b <- bridge_load("s", file.path(dir, "s.rds"))
  expect_true("splines" %in% b$packages)
  expect_true("package:splines" %in% search())
  expect_equal(b$score(rows), predict(m, rows))
})

test_that("several installed packages with predict() for the class: name it in .json", {
  expect_match(ambiguous_message("gam", c("gam", "mgcv")),
               "several installed packages define predict\\(\\) for class 'gam' \\(gam, mgcv\\)")
})
