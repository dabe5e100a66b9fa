# bridge_load(): read, load the class's package, source the script into its own environment, call init once,
# and fail with a message that names the model and says what to fix.

rds <- function(dir, name) file.path(dir, paste0(name, ".rds"))
script <- function(dir, name) file.path(dir, paste0(name, ".R"))

test_that("a model without a script: the shape the worker reads, scoring through bridge_score", {
  m <- fitted_model("lm")
  dir <- models_dir(list(cars = m))
  b <- bridge_load("cars", rds(dir, "cars"))
  expect_named(b, c("model", "score", "class", "packages", "has_script", "schema", "na_problem"))
  expect_null(b$na_problem)
  expect_equal(b$model, m)
  expect_identical(b$class, "lm")
  expect_identical(b$packages, "stats")
  expect_false(b$has_script)
  expect_identical(b$schema, bridge_schema(m))
  expect_equal(b$score(rows), predict(m, rows))
})

test_that("the package of the model's class is named, and predict_args reach predict()", {
  dir <- models_dir(list(rf = fitted_model("rf_class"), rg = fitted_model("ranger_prob"),
                         g = fitted_model("gbm_all"), s = fitted_model("svm"), t = fitted_model("rpart_class")))
  rf <- bridge_load("rf", rds(dir, "rf"), predict_args = list(type = "prob"))
  expect_identical(rf$packages, "randomForest")
  expect_identical(rf$class, c("randomForest.formula", "randomForest"))
  expect_equal(rf$score(rows), predict(fitted_model("rf_class"), rows, type = "prob"))
  expect_identical(bridge_load("rg", rds(dir, "rg"))$packages, "ranger")
  expect_null(bridge_load("rg", rds(dir, "rg"))$schema)
  expect_identical(bridge_load("g", rds(dir, "g"))$packages, "gbm")
  expect_identical(bridge_load("s", rds(dir, "s"))$packages, "e1071")
  expect_identical(bridge_load("t", rds(dir, "t"))$packages, "rpart")
})

test_that("a class the bridge does not know: the package that registers its predict() method", {
  skip_if_not_installed("nnet")
  m <- quietly(nnet::multinom(k ~ x1 + f, train))
  dir <- models_dir(list(mn = m))
  b <- bridge_load("mn", rds(dir, "mn"))
  expect_identical(b$packages, "nnet")
  expect_identical(installed_predict_package(c("multinom", "nnet")), "nnet")
  expect_equal(b$score(rows), predict(m, rows))
})

test_that("a script's score(), init() called once, its own environment under globalenv()", {
  m <- fitted_model("lm")
  dir <- models_dir(
    list(a = m, b = m),
    list(
      a = c("calls <- 0",
            "offset <- function() 100",
            "init <- function(model) calls <<- calls + 1",
            "score <- function(model, newdata) data.frame(fit = predict(model, newdata) + offset(), init_calls = calls)"),
      b = c("offset <- function() -100",
            "score <- function(model, newdata) predict(model, newdata) + offset()")
    )
  )
  a <- bridge_load("a", rds(dir, "a"), script(dir, "a"))
  b <- bridge_load("b", rds(dir, "b"), script(dir, "b"))
  expect_true(a$has_script)
  out <- a$score(rows)
  expect_equal(out$fit, unname(predict(m, rows) + 100))
  expect_equal(out$init_calls, rep(1, nrow(rows)))
  expect_equal(a$score(rows)$init_calls, rep(1, nrow(rows)))
  expect_equal(b$score(rows), predict(m, rows) - 100) # same helper name, no clash
  expect_false(exists("offset", envir = globalenv(), inherits = FALSE))
  user_score <- get("user_score", environment(b$score))
  expect_identical(parent.env(environment(user_score)), globalenv())
  expect_identical(a$schema, bridge_schema(m))
})

test_that("script failures name the model, the file and the line", {
  m <- fitted_model("lm")
  dir <- models_dir(
    list(p = m, r = m, none = m, only_init = m, one_arg = m, bad_init = m),
    list(
      p = c("score <- function(model, newdata) {", "  predict(model newdata)", "}"),
      r = c("x <- 1", "", "stop('boom')", "score <- function(model, newdata) 1"),
      none = "scorer <- function(model, newdata) 1",
      only_init = "init <- function(model) invisible()",
      one_arg = "score <- function(newdata) 1",
      bad_init = c("init <- function(model) stop('no connection')", "score <- function(model, newdata) 1")
    )
  )
  expect_error(bridge_load("p", rds(dir, "p"), script(dir, "p")),
               sprintf("model 'p': %s failed: .*p.R:2:17: unexpected symbol", basename(script(dir, "p"))))
  expect_error(bridge_load("r", rds(dir, "r"), script(dir, "r")),
               sprintf("model 'r': %s failed at line 3: boom", basename(script(dir, "r"))), fixed = TRUE)
  for (name in c("none", "only_init", "one_arg")) {
    expect_error(bridge_load(name, rds(dir, name), script(dir, name)),
                 sprintf("model '%s': %s must define score(model, newdata)", name, basename(script(dir, name))), fixed = TRUE)
  }
  expect_error(bridge_load("bad_init", rds(dir, "bad_init"), script(dir, "bad_init")),
               sprintf("model 'bad_init': init(model) in %s failed: no connection", basename(script(dir, "bad_init"))),
               fixed = TRUE)
  expect_error(bridge_load("x", rds(dir, "p"), file.path(dir, "missing.R")), "model 'x': cannot read .*missing.R: no such file")
})

test_that("scoring errors and warnings name the model (and the script)", {
  m <- fitted_model("lm")
  dir <- models_dir(list(plain = m, s = m, w = m),
                    list(s = "score <- function(model, newdata) stop('no column z')",
                         w = "score <- function(model, newdata) as.numeric(rep('x', nrow(newdata)))"))
  plain <- bridge_load("plain", rds(dir, "plain"))
  expect_error(plain$score(rows[, c("x1", "f")]), "^model 'plain': .*object 'o' not found")
  s <- bridge_load("s", rds(dir, "s"), script(dir, "s"))
  expect_error(s$score(rows), sprintf("model 's': score() in %s failed: no column z", basename(script(dir, "s"))), fixed = TRUE)
  w <- bridge_load("w", rds(dir, "w"), script(dir, "w"))
  expect_error(w$score(rows), "model 'w': score\\(\\) in .* failed: R warned while predicting.*NAs introduced by coercion")
})

test_that("unreadable or missing files, missing packages, unknown classes", {
  dir <- models_dir(list(odd = structure(list(), class = "bridge_nothing")),
                    list(odd2 = "score <- function(model, newdata) rep(1, nrow(newdata))"))
  expect_error(bridge_load("x", file.path(dir, "x.rds")),
               sprintf("model 'x': cannot read %s: no such file", basename(file.path(dir, "x.rds"))), fixed = TRUE)
  writeLines("not an rds file", file.path(dir, "junk.rds"))
  expect_error(bridge_load("junk", rds(dir, "junk")), "model 'junk': cannot read .*junk.rds: unknown input format")

  expect_error(bridge_load("odd", rds(dir, "odd")),
               sprintf("model 'odd': model class 'bridge_nothing' has no predict() method the bridge knows; write score(model, newdata) in %s",
                       basename(script(dir, "odd"))), fixed = TRUE)
  file.copy(rds(dir, "odd"), rds(dir, "odd2"))
  odd <- bridge_load("odd2", rds(dir, "odd2"), script(dir, "odd2"))
  expect_identical(odd$packages, character(0))
  expect_null(odd$schema)
  expect_equal(odd$score(rows), rep(1, nrow(rows)))

  set.seed(5)
  saveRDS(randomForest::randomForest(cls ~ x1, train, ntree = 5, keep.forest = FALSE), rds(dir, "noforest"))
  expect_error(bridge_load("noforest", rds(dir, "noforest")),
               "model 'noforest': the randomForest model was saved without its forest: refit with keep.forest = TRUE",
               fixed = TRUE)

  # an S4 object whose class comes from a package that is not installed
  where <- new.env()
  methods::setClass("BridgeFakeS4", methods::representation(x = "numeric"), where = where)
  obj <- methods::new(methods::getClass("BridgeFakeS4", where = where), x = 1)
  cls <- class(obj)
  attr(cls, "package") <- "bridgeNoSuchPkg"
  attr(obj, "class") <- cls
  saveRDS(obj, rds(dir, "credit"))
  expect_error(bridge_load("credit", rds(dir, "credit")),
               "model 'credit': package 'bridgeNoSuchPkg' is needed to load this model but is not installed (on Debian: apt-get install r-cran-bridgenosuchpkg)",
               fixed = TRUE)
})

test_that("predict_args: named, and not beside a script", {
  m <- fitted_model("glm")
  dir <- models_dir(list(g = m), list(g = "score <- function(model, newdata) predict(model, newdata)"))
  expect_equal(bridge_load("g", rds(dir, "g"), predict_args = list(type = "link"))$score(rows), predict(m, rows))
  expect_error(bridge_load("g", rds(dir, "g"), predict_args = list("link")),
               "model 'g': predict_args must be a JSON object of named predict() arguments", fixed = TRUE)
  expect_error(bridge_load("g", rds(dir, "g"), script(dir, "g"), predict_args = list(type = "link")),
               "model 'g': predict_args are given to the default predict(), but", fixed = TRUE)
})

test_that("packages named in <name>.json are attached before the model is read; a missing one is named", {
  m <- fitted_model("lm")
  dir <- models_dir(list(p = m))
  b <- bridge_load("p", rds(dir, "p"), packages = "stats4")
  expect_true("package:stats4" %in% search())
  expect_identical(b$packages, c("stats4", "stats"))
  expect_error(bridge_load("p", rds(dir, "p"), packages = "bridgeNoSuchPkg"),
               "model 'p': package 'bridgeNoSuchPkg' is needed to load this model but is not installed", fixed = TRUE)
})
