# Publishing and managing models: rb_publish, rb_models, rb_versions, rb_activate, rb_delete.

#' Publish a model
#'
#' The server loads it in a fresh R worker and scores one row with it before it serves it; if that
#' fails, the call fails with R's message and the version served before keeps serving.
#'
#' @param conn a connection from rb_connect()
#' @param name the model's name on the server
#' @param model the fitted model object (saved with saveRDS here), or the path of an .rds file
#' @param score NULL (the server calls predict()), a function(model, newdata), or the path of an .R file
#'   defining score(model, newdata) (and optionally init(model))
#' @param config NULL, a list of <name>.json settings (version, description, schema, predict_args,
#'   timeout, batch), or the path of a .json file
#' @return the new version: a list with version (the server's number), label, sha256 and schema
rb_publish <- function(conn, name, model, score = NULL, config = NULL) {
  temps <- character(0)
  on.exit(unlink(temps))
  as_file <- function(x, ext, write) {
    if (is.character(x) && length(x) == 1 && !inherits(x, "json")) {
      if (!file.exists(x)) stop(sprintf("no file %s", x), call. = FALSE)
      return(x)
    }
    path <- tempfile(fileext = ext)
    temps <<- c(temps, path)
    write(x, path)
    path
  }
  form <- list(model = httr::upload_file(as_file(model, ".rds", function(x, p) saveRDS(x, p)),
                                         type = "application/octet-stream"))
  if (!is.null(score)) {
    form$script <- httr::upload_file(as_file(score, ".R", write_score), type = "text/plain")
  }
  if (!is.null(config)) {
    form$config <- httr::upload_file(as_file(config, ".json", function(x, p) {
      writeLines(jsonlite::toJSON(x, auto_unbox = TRUE, null = "null", digits = NA), p)
    }), type = "application/json")
  }
  rb_call(conn, "PUT", paste0("/models/", escape(name)), form = form)
}

# A score function becomes <name>.R: score <- function(model, newdata) ... (its body only: variables it
# captured from where it was defined do not travel; put them in the model or in the function).
write_score <- function(fn, path) {
  if (!is.function(fn)) stop("score must be a function(model, newdata) or the path of an .R file", call. = FALSE)
  writeLines(c("score <- ", deparse(fn, control = c("keepNA", "keepInteger", "niceNames", "showAttributes"))), path)
}

#' The models a server serves, as a data.frame (name, version, state, error)
rb_models <- function(conn) {
  answer <- rb_call(conn, "GET", "/models")
  models <- answer$models
  if (length(models) == 0) return(data.frame(name = character(), version = character(), state = character()))
  models
}

#' The versions of a model kept on the server (oldest first; `active` marks the one served)
rb_versions <- function(conn, name) {
  answer <- rb_call(conn, "GET", paste0("/models/", escape(name), "/versions"))
  versions <- answer$versions
  versions$files <- NULL
  versions
}

#' Serve version `version` (a number from rb_versions()) of a model: rollback or roll forward
rb_activate <- function(conn, name, version) {
  invisible(rb_call(conn, "POST", sprintf("/models/%s/versions/%d/activate", escape(name), as.integer(version))))
}

#' Stop serving a model (its versions are kept: rb_activate() brings one back)
rb_delete <- function(conn, name) {
  invisible(rb_call(conn, "DELETE", paste0("/models/", escape(name))))
}
