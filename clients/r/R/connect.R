# rb_connect(): a connection that signs in with a password and keeps its token fresh.
#
# The connection is an environment (tokens change in place as they are renewed). Tokens are renewed
# RENEW_MARGIN seconds before they expire, with the refresh token (POST /login/refresh), and once more
# when the server answers 401 token_expired; when refreshing fails it signs in again.

RENEW_MARGIN <- 30

#' Connect to an R Bridge server
#'
#' @param url the server, e.g. "https://scoring.example.com"
#' @param username,password a user of the server (a publisher to publish models)
#' @param timeout seconds to wait for an answer (publishing loads the model first)
#' @return a connection for the other rb_ functions
rb_connect <- function(url, username, password, timeout = 300) {
  conn <- new.env(parent = emptyenv())
  conn$url <- sub("/+$", "", url)
  conn$username <- username
  conn$password <- password
  conn$timeout <- timeout
  conn$token <- NULL
  class(conn) <- "rb_connection"
  sign_in(conn)
  conn
}

print.rb_connection <- function(x, ...) {
  cat(sprintf("<R Bridge %s as %s>\n", x$url, x$username))
  invisible(x)
}

sign_in <- function(conn) {
  keep_tokens(conn, rb_call(conn, "POST", "/login",
                            body = list(username = conn$username, password = conn$password), auth = FALSE))
}

keep_tokens <- function(conn, answer) {
  conn$token <- answer$access_token
  conn$refresh <- answer$refresh_token
  conn$renew_at <- Sys.time() + max(answer$expires_in - RENEW_MARGIN, answer$expires_in * 0.9)
  invisible(conn)
}

renew <- function(conn) {
  answer <- tryCatch(rb_call(conn, "POST", "/login/refresh", body = list(refresh_token = conn$refresh),
                             auth = FALSE),
                     rbridge_error = function(e) NULL)
  if (is.null(answer)) sign_in(conn) else keep_tokens(conn, answer)
}

# One call to the server: JSON in (body, a list) or a multipart form (form), JSON out. Every failure is an
# rbridge_error condition carrying the server's status, code and message.
rb_call <- function(conn, method, path, body = NULL, form = NULL, auth = TRUE, retry = TRUE) {
  if (auth && Sys.time() >= conn$renew_at) renew(conn)
  headers <- httr::add_headers(Authorization = if (auth) paste("Bearer", conn$token) else NULL,
                               `User-Agent` = "rbridge-r-client")
  url <- paste0(conn$url, path)
  response <- tryCatch({
    if (!is.null(form)) {
      httr::VERB(method, url, headers, body = form, encode = "multipart", httr::timeout(conn$timeout))
    } else if (!is.null(body)) {
      json <- if (inherits(body, "json")) body else jsonlite::toJSON(body, auto_unbox = TRUE, null = "null")
      httr::VERB(method, url, headers, httr::content_type_json(), body = as.character(json),
                 httr::timeout(conn$timeout))
    } else {
      httr::VERB(method, url, headers, httr::timeout(conn$timeout))
    }
  }, error = function(e) rb_abort(NA_integer_, "unreachable",
                                  sprintf("cannot reach %s: %s", conn$url, conditionMessage(e))))
  status <- httr::status_code(response)
  text <- httr::content(response, as = "text", encoding = "UTF-8")
  answer <- if (nzchar(text)) tryCatch(jsonlite::fromJSON(text, simplifyVector = TRUE), error = function(e) NULL)
  if (status == 401 && auth && retry && identical(answer$error$code, "token_expired")) {
    renew(conn)
    return(rb_call(conn, method, path, body, form, auth, retry = FALSE))
  }
  if (status >= 400) {
    if (is.list(answer) && is.list(answer$error)) rb_abort(status, answer$error$code, answer$error$message)
    rb_abort(status, "http_error", sprintf("%s %s answered %d: %s", method, path, status, substr(text, 1, 200)))
  }
  answer
}

rb_abort <- function(status, code, message) {
  stop(structure(class = c("rbridge_error", "error", "condition"),
                 list(message = sprintf("R Bridge %s: %s", if (is.na(status)) code else status, message),
                      call = NULL, status = status, code = code, server_message = message)))
}

escape <- function(name) utils::URLencode(name, reserved = TRUE)
