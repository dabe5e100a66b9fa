# Small fitted models shared by the tests, fitted once on synthetic data with factor, ordered, character,
# integer and logical columns. Factor levels are deliberately not in alphabetical order (b, a, c), so that a
# schema that sorted them, or a predict() that recoded them, would show.

training_data <- function(n = 150, seed = 42) {
  set.seed(seed)
  d <- data.frame(
    x1 = round(rnorm(n), 3),
    x2 = round(runif(n, 0.5, 2), 3),
    f = factor(sample(c("b", "a", "c"), n, TRUE), levels = c("b", "a", "c")),
    o = factor(sample(c("lo", "mid", "hi"), n, TRUE), levels = c("lo", "mid", "hi"), ordered = TRUE),
    ch = sample(c("u", "v"), n, TRUE),
    i = sample(1:5, n, TRUE),
    l = sample(c(TRUE, FALSE), n, TRUE),
    stringsAsFactors = FALSE
  )
  d$y <- 1 + d$x1 + 2 * (d$f == "a") - (d$f == "c") + 0.5 * as.integer(d$o) + (d$ch == "v") + 0.2 * d$i +
    rnorm(n, sd = 0.3)
  d$cls <- factor(ifelse(d$y > stats::median(d$y), "high", "low"), levels = c("low", "high"))
  d$k <- factor(c("p", "q", "r")[1 + (d$y > 1.5) + (d$y > 3)])
  d
}

train <- training_data()
rows <- train[1:20, ]

model_cache <- new.env()
fitted_model <- function(name) {
  if (!is.null(model_cache[[name]])) return(model_cache[[name]])
  set.seed(7)
  d <- train
  m <- switch(name,
    lm = stats::lm(y ~ x1 + f + o + ch + i + l, d),
    lm_log = stats::lm(y ~ log(x2) + f, d),
    glm = stats::glm(cls ~ x1 + f + ch, stats::binomial, d),
    glm_log = stats::glm(cls ~ log(x2) + f, stats::binomial, d),
    rf_class = randomForest::randomForest(cls ~ x1 + f + i, d, ntree = 25),
    rf_ordered = randomForest::randomForest(cls ~ x1 + o, d, ntree = 10),
    rf_xy = randomForest::randomForest(d[, c("x1", "f", "o")], d$y, ntree = 25),
    rf_xy_chr = randomForest::randomForest(d[, c("x1", "ch")], d$y, ntree = 10),
    ranger_reg = ranger::ranger(y ~ x1 + f + i, d, num.trees = 25, seed = 1),
    ranger_order = ranger::ranger(y ~ x1 + f + ch, d, num.trees = 25, seed = 1, respect.unordered.factors = "order"),
    ranger_prob = ranger::ranger(cls ~ x1 + f, d, num.trees = 25, seed = 1, probability = TRUE),
    ranger_class = ranger::ranger(k ~ x1 + f, d, num.trees = 25, seed = 1),
    gbm_all = gbm::gbm(y ~ x1 + f + o, data = d, distribution = "gaussian", n.trees = 40, shrinkage = 0.1),
    gbm_test = gbm::gbm(y ~ x1 + f, data = d, distribution = "gaussian", n.trees = 60, shrinkage = 0.3,
                        train.fraction = 0.7),
    gbm_cv = quietly(gbm::gbm(y ~ x1 + f, data = d, distribution = "gaussian", n.trees = 40, shrinkage = 0.3,
                              cv.folds = 2, n.cores = 1)),
    gbm_bern = gbm::gbm(as.integer(cls == "high") ~ x1 + f, data = d, distribution = "bernoulli", n.trees = 30),
    gbm_multi = suppressWarnings(gbm::gbm(k ~ x1 + f, data = d, distribution = "multinomial", n.trees = 20)),
    rpart_class = rpart::rpart(cls ~ x1 + f + ch + o, d),
    rpart_anova = rpart::rpart(y ~ x1 + f, d),
    svm = e1071::svm(cls ~ x1 + x2 + l, d, probability = TRUE),
    svm_factor = e1071::svm(cls ~ x1 + f, d),
    svm_xy = e1071::svm(as.matrix(d[, c("x1", "x2")]), d$y),
    stop("no test model ", name)
  )
  model_cache[[name]] <- m
  m
}

quietly <- function(expr) {
  utils::capture.output(value <- suppressMessages(expr))
  value
}

# A predictor data.frame as the worker builds it (factor columns keep the training levels).
predictors <- function(cols, d = rows) d[, cols, drop = FALSE]

# A temporary models folder holding the given objects as <name>.rds and scripts as <name>.R.
models_dir <- function(models = list(), scripts = list()) {
  dir <- tempfile("models")
  dir.create(dir)
  for (name in names(models)) saveRDS(models[[name]], file.path(dir, paste0(name, ".rds")))
  for (name in names(scripts)) writeLines(scripts[[name]], file.path(dir, paste0(name, ".R")))
  dir
}
