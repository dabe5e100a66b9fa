# bridge_output(pred, n): a prediction as plain lists for the wire, or an error saying what is wrong with it.
#
#   list(kind = "vector", names = NULL, values = list(v))       v: double, integer, character or logical, length n
#                                                               (and levels = levels(pred) when pred is a factor)
#   list(kind = "table", names = <column names>, values = <list of such vectors>)   one per column, each length n
#
# A factor becomes its labels. A data.frame, or a matrix with column names (class probabilities), is a table; a
# one-column matrix without column names is a vector; a matrix with several unnamed columns gets V1, V2, ...
# A named list of parts with one row each per input row (predict(..., se.fit = TRUE): $fit, $se.fit) is a
# table too, one column per part (a matrix part gives part.column); the per-model scalars R's predict methods
# add beside them ($df, $residual.scale) are left out, so that the shape does not depend on the row count.
# Names, dims and classes are dropped; nothing else is converted: another list, an S4 object, a Date, a complex
# vector or a wrong row count is an error, because guessing there would put wrong numbers on the wire.

bridge_output <- function(pred, n) {
  if (is.data.frame(pred)) return(output_table(as.list(pred), names(pred), pred, n))
  if (is.list(pred) && !isS4(pred)) return(output_parts(pred, n))
  if (is.matrix(pred)) {
    if (nrow(pred) != n) stop(bad_output(pred, n))
    if (ncol(pred) == 1 && is.null(colnames(pred))) return(output_vector(pred[, 1], pred, n))
    names <- colnames(pred)
    if (is.null(names)) names <- paste0("V", seq_len(ncol(pred)))
    columns <- lapply(seq_len(ncol(pred)), function(j) pred[, j])
    return(output_table(columns, names, pred, n))
  }
  output_vector(pred, pred, n)
}

list_scalars <- c("df", "residual.scale")

output_parts <- function(pred, n) {
  parts <- pred[setdiff(names(pred), list_scalars)]
  if (is.null(names(pred)) || length(parts) == 0 || any(vapply(parts, NROW, 1L) != n) ||
      !all(vapply(parts, function(p) is.atomic(p) && length(dim(p)) <= 2, logical(1)))) {
    stop(bad_output(pred, n))
  }
  columns <- list()
  for (part in names(parts)) {
    x <- parts[[part]]
    if (is.matrix(x)) {
      cols <- colnames(x)
      if (is.null(cols)) cols <- seq_len(ncol(x))
      for (j in seq_len(ncol(x))) columns[[paste(part, cols[j], sep = ".")]] <- x[, j]
    } else {
      columns[[part]] <- x
    }
  }
  output_table(unname(columns), names(columns), pred, n)
}

output_vector <- function(x, pred, n) {
  v <- wire_vector(x)
  if (is.null(v) || length(v) != n) stop(bad_output(pred, n))
  out <- list(kind = "vector", names = NULL, values = list(v))
  if (is.factor(x)) out$levels <- levels(x)
  out
}

output_table <- function(columns, names, pred, n) {
  if (length(columns) == 0) stop(bad_output(pred, n))
  if (any(is.na(names) | names == "") || anyDuplicated(names)) {
    stop(sprintf("score() returned columns named %s: each column needs its own non-empty name",
                 paste0("'", names, "'", collapse = ", ")))
  }
  values <- lapply(seq_along(columns), function(j) {
    v <- wire_vector(columns[[j]])
    if (is.null(v)) {
      stop(sprintf("score() returned column '%s' as %s; each column must be numeric, integer, character, logical or factor",
                   names[[j]], describe(columns[[j]])))
    }
    if (length(v) != n) stop(bad_output(pred, n))
    v
  })
  list(kind = "table", names = as.character(names), values = values)
}

# The bare vector of an atomic prediction (factor -> labels), or NULL when it is not one of the wire types.
wire_vector <- function(x) {
  if (is.factor(x)) return(as.character(x))
  if (isS4(x) || !is.atomic(x) || is.null(x)) return(NULL)
  if (length(dim(x)) > 1) return(NULL)
  # Classed atomics other than factor (Date, POSIXct, difftime) would go out as bare numbers: refuse.
  cls <- setdiff(oldClass(x), c("numeric", "integer", "character", "logical", "array", "matrix", "votes"))
  if (length(cls) > 0) return(NULL)
  if (!(typeof(x) %in% c("double", "integer", "character", "logical"))) return(NULL)
  as.vector(x, mode = typeof(x)) # drops names, dim and other attributes
}

bad_output <- function(pred, n) {
  sprintf(paste0("score() returned %s; it must return a vector, factor, matrix or data.frame ",
                 "with one row per input row (n = %d)"), describe(pred), n)
}

describe <- function(x) {
  if (is.null(x)) return("NULL")
  if (isS4(x)) return(sprintf("an S4 object of class '%s'", class(x)[1]))
  if (is.data.frame(x)) return(sprintf("a data.frame with %d rows and %d columns", nrow(x), ncol(x)))
  if (is.array(x)) {
    return(sprintf("a %s %s of dimensions %s", typeof(x), if (is.matrix(x)) "matrix" else "array",
                   paste(dim(x), collapse = " x ")))
  }
  if (is.factor(x)) return(sprintf("a factor of length %d", length(x)))
  if (is.list(x)) {
    parts <- if (is.null(names(x))) "" else sprintf(" with parts %s", paste0("$", names(x), "[", vapply(x, NROW, 1L), "]", collapse = ", "))
    return(sprintf("a list of length %d (class '%s')%s", length(x), class(x)[1], parts))
  }
  if (is.atomic(x)) {
    cls <- oldClass(x)
    what <- if (is.null(cls)) sprintf("a %s vector", typeof(x)) else sprintf("an object of class '%s'", cls[1])
    return(sprintf("%s of length %d", what, length(x)))
  }
  sprintf("an object of type '%s'", typeof(x))
}
