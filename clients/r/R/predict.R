# rb_predict(): score a data.frame on the server and get back what predict() gives locally.

#' Score rows with a published model
#'
#' @param conn a connection from rb_connect()
#' @param name the model's name
#' @param newdata a data.frame (or a list of equal-length columns)
#' @return a numeric (or character, logical) vector, a factor with the model's levels when the
#'   model answers a factor, or a data.frame for answers with several columns (class probabilities)
rb_predict <- function(conn, name, newdata) {
  newdata <- as.data.frame(newdata, stringsAsFactors = FALSE)
  answer <- rb_call(conn, "POST", paste0("/models/", escape(name), "/predict"),
                    body = columns_json(newdata))
  pred <- answer$predictions
  if (is.data.frame(pred)) {
    rownames(pred) <- NULL
    return(pred)
  }
  if (is.character(pred) || (is.logical(pred) && all(is.na(pred)))) {
    levels <- output_levels(conn, name, answer$version)
    if (!is.null(levels)) return(factor(pred, levels = levels))
  }
  if (is.null(pred)) pred <- logical(0)
  pred
}

# The model's answer levels (GET /models/<name> output.levels), remembered per version.
output_levels <- function(conn, name, version) {
  key <- paste(name, version, sep = "\r")
  if (is.null(conn$levels)) conn$levels <- list()
  if (!key %in% names(conn$levels)) {
    described <- rb_call(conn, "GET", paste0("/models/", escape(name)))
    conn$levels[[key]] <- if (identical(described$version, version)) described$output$levels
  }
  conn$levels[[key]]
}

# {"columns": {...}} with every double written with 17 significant digits, so that the server reads the
# very numbers R holds (jsonlite writes at most 15).
columns_json <- function(df) {
  cols <- lapply(df, function(x) {
    if (is.double(x) && !is.factor(x)) {
      cells <- ifelse(is.finite(x), sprintf("%.17g", x), "null")
      return(structure(paste0("[", paste(cells, collapse = ","), "]"), class = "json"))
    }
    if (is.factor(x)) x <- as.character(x)
    x
  })
  structure(as.character(jsonlite::toJSON(list(columns = cols), json_verbatim = TRUE, na = "null",
                                          null = "null")), class = "json")
}
