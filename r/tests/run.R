# Runs the R side's tests: Rscript r/tests/run.R (exits non-zero when a test fails).
# Sources r/*.R into one environment, as the worker does, and runs r/tests/testthat/test-*.R against it.

script <- sub("^--file=", "", grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE))
root <- normalizePath(file.path(dirname(if (length(script)) script else "r/tests/run.R"), "..", ".."))

bridge <- new.env(parent = globalenv())
for (f in sort(Sys.glob(file.path(root, "r", "*.R")))) sys.source(f, envir = bridge, keep.source = TRUE)

suppressPackageStartupMessages(library(testthat))
test_dir(file.path(root, "r", "tests", "testthat"), env = bridge, stop_on_failure = TRUE)
