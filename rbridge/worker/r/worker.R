# The glue the Python worker calls on every request. Kept to one R call per scoring request:
# build newdata from typed vectors, score it, normalise the result, all inside one tryCatch so
# that an R error comes back as a value carrying R's message instead of a traceback.

# Build a data.frame from column vectors without data.frame()'s checks and copies.
# cols: list of vectors (double, integer codes for factors, character, logical);
# levels: list with, per column, NULL or the training levels (then the integer codes become a
# factor with exactly those levels, in training order); ordered: logical per column;
# types: the schema's type per column, and zone: per column the time zone of a datetime or the
# units of a difftime ("" otherwise): a date arrives as days since 1970-01-01, a datetime as
# seconds since 1970-01-01 UTC, a difftime as numbers in its units, all as doubles.
bridge_frame <- function(cols, col_names, levels, ordered, n, types = NULL, zone = NULL) {
  for (i in seq_along(cols)) {
    lv <- levels[[i]]
    if (!is.null(lv) && is.integer(cols[[i]])) {
      cols[[i]] <- structure(cols[[i]], levels = lv,
                             class = if (ordered[[i]]) c("ordered", "factor") else "factor")
    } else if (!is.null(types)) {
      cols[[i]] <- switch(types[[i]],
        date = structure(cols[[i]], class = "Date"),
        datetime = structure(cols[[i]], class = c("POSIXct", "POSIXt"), tzone = zone[[i]]),
        difftime = structure(cols[[i]], class = "difftime", units = zone[[i]]),
        cols[[i]])
    }
  }
  structure(cols, names = col_names, class = "data.frame", row.names = c(NA_integer_, -n))
}

# Score one request (or a merged batch). Returns an unnamed list, read by position (asking R for
# names() from Python is an R call of its own, ~0.1 ms): list(TRUE, kind, names, values, levels) with the
# fields of bridge_output(), or list(FALSE, <R's condition message>).
bridge_run <- function(loaded, cols, col_names, levels, ordered, n, types = NULL, zone = NULL) {
  tryCatch({
    newdata <- bridge_frame(cols, col_names, levels, ordered, n, types, zone)
    out <- bridge_output(loaded$score(newdata), n)
    list(TRUE, out$kind, out$names, out$values, out$levels)
  }, error = function(e) list(FALSE, bridge_condition_text(e)))
}

# Run f() and catch its error as list(ok = FALSE, message =) (used for loading models).
bridge_try <- function(f) {
  tryCatch(list(ok = TRUE, value = f()),
           error = function(e) list(ok = FALSE, message = bridge_condition_text(e)))
}

# bridge_load (r/load.R) behind bridge_try: the worker reports a failed model, it never dies of one.
bridge_load_safe <- function(name, rds_path, script_path, predict_args, packages) {
  bridge_try(function() bridge_load(name, rds_path, script_path, predict_args, packages))
}

bridge_condition_text <- function(e) {
  msg <- conditionMessage(e)
  call <- conditionCall(e)
  if (!is.null(call) && !identical(deparse(call)[1], "doTryCatch(return(expr), name, parentenv, handler)")) {
    msg <- paste0(msg, " (in ", deparse(call, nlines = 1L)[1], ")")
  }
  msg
}

# R's own heap, in bytes: in use now (after a collection) and the most it has held.
bridge_heap <- function() {
  g <- gc(verbose = FALSE)
  ncell <- 56  # bytes per cons cell on 64-bit builds
  vcell <- 8
  c(used = g[1, 1] * ncell + g[2, 1] * vcell,
    max = g[1, 5] * ncell + g[2, 5] * vcell)  # column 5 is "max used", in cells
}
