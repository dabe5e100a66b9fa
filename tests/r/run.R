# Runs the R side's tests: Rscript tests/r/run.R (exits non-zero when a test fails).
# Sources rbridge/worker/r/*.R into one environment, as the worker does, and runs
# tests/r/testthat/test-*.R against it.

script <- sub("^--file=", "", grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE))
here <- normalizePath(dirname(if (length(script)) script else "tests/r/run.R"))
root <- normalizePath(file.path(here, "..", ".."))

bridge <- new.env(parent = globalenv())
for (f in sort(Sys.glob(file.path(root, "rbridge", "worker", "r", "*.R")))) sys.source(f, envir = bridge, keep.source = TRUE)

if (!nzchar(Sys.getenv("TZ"))) Sys.setenv(TZ = "UTC") # else Sys.timezone() asks timedatectl, which warns here
suppressPackageStartupMessages(library(testthat))
test_dir(file.path(here, "testthat"), env = bridge, stop_on_failure = TRUE)
