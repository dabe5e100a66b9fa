# Trains the example models R Bridge ships, on datasets that come with R, and writes them next to this file:
#   mtcars_lm         lm of mpg on wt, hp and the factor cyl (R keeps the schema; mtcars_lm.R adds an interval)
#   iris_rf           randomForest classifier Species ~ . (class labels; R keeps the schema)
#   iris_ranger_prob  ranger probability forest Species ~ . (class probabilities; ranger does not keep the
#                     column types in its default mode, so iris_ranger_prob.json declares them)
# Usage: Rscript models/train_examples.R      (fixed seeds; re-running gives the same predictions)
#
# Models are fitted at top level, not inside functions: a formula's environment is saved with the model, and a
# function's frame would drag its local data into the .rds.

suppressPackageStartupMessages({
  library(randomForest)
  library(ranger)
  library(jsonlite)
})

script <- sub("^--file=", "", grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE))
out <- if (length(script)) dirname(normalizePath(script)) else "models"

write_model <- function(model, name, config) {
  saveRDS(model, file.path(out, paste0(name, ".rds")))
  write_json(config, file.path(out, paste0(name, ".json")), auto_unbox = TRUE, pretty = TRUE)
  cat(sprintf("%-18s %6.1f KB\n", name, file.size(file.path(out, paste0(name, ".rds"))) / 1024))
}

cars <- mtcars[, c("mpg", "wt", "hp", "cyl")]
cars$cyl <- factor(cars$cyl) # levels "4", "6", "8"
mtcars_lm <- lm(mpg ~ wt + hp + cyl, data = cars)
write_model(mtcars_lm, "mtcars_lm", list(
  version = "1",
  description = "Miles per gallon from weight (1000 lbs), horsepower and cylinders (4, 6 or 8), with a 90% prediction interval (see mtcars_lm.R)"
))

set.seed(2024)
iris_rf <- randomForest(Species ~ ., data = iris, ntree = 100)
write_model(iris_rf, "iris_rf", list(
  version = "1",
  description = "Iris species (setosa, versicolor, virginica) from sepal and petal length and width in cm; randomForest, 100 trees"
))

iris_ranger_prob <- ranger(Species ~ ., data = iris, num.trees = 50, probability = TRUE, seed = 2024)
measures <- c("Sepal.Length", "Sepal.Width", "Petal.Length", "Petal.Width")
write_model(iris_ranger_prob, "iris_ranger_prob", list(
  version = "1",
  description = "Probability of each iris species from sepal and petal length and width in cm; ranger probability forest, 50 trees",
  schema = list(columns = lapply(measures, function(m) list(name = m, type = "numeric")))
))
