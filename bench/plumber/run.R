# Starts the benchmark's plumber API:  BENCH_MODEL=path/to/model.rds Rscript bench/plumber/run.R PORT
args <- commandArgs(trailingOnly = TRUE)
port <- as.integer(if (length(args)) args[[1L]] else "8000")
here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))
pr <- plumber::pr(file.path(here, "plumber.R"))
plumber::pr_run(pr, host = "127.0.0.1", port = port, docs = FALSE, quiet = TRUE)
