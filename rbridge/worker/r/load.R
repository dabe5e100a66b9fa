# bridge_load(name, rds_path, script_path, predict_args): read one model, make it ready to score, and say
# what it is.
#
# Returns list(model, score, class, packages, has_script, schema), where score(newdata) gives the raw
# prediction: the script's score(model, newdata) when there is a script, else bridge_score(model, newdata,
# predict_args). Steps, in order:
#   1. readRDS the model;
#   2. load the namespace of the package its class needs (readRDS does not, and predict() only dispatches to
#      methods of loaded namespaces);
#   3. source the script, if any, into an environment of its own (child of globalenv(), so two scripts never
#      clash) and call its init(model) once;
#   4. read the schema from the object (bridge_schema).
# Every failure is an R error that names the model and says what to fix.
#
# A script must define score(model, newdata); a script with only init() is refused rather than falling back to
# the default predict(), because a misspelt score() would then go unnoticed. (To keep the default scoring and
# still run setup code, define score <- function(model, newdata) bridge_score(model, newdata).) predict_args
# only reach the default scoring: with a script they are refused, for the same reason.

bridge_load <- function(name, rds_path, script_path = NULL, predict_args = list()) {
  # Messages reach callers: name files, never the server's folders.
  folder <- paste0(dirname(rds_path), "/")
  fail <- function(fmt, ...) {
    stop(gsub(folder, "", sprintf("model '%s': %s", name, sprintf(fmt, ...)), fixed = TRUE), call. = FALSE)
  }
  model <- read_model(rds_path, fail)
  packages <- model_packages(model)
  for (pkg in packages) load_package(pkg, fail)
  predict_args <- as.list(predict_args)
  script <- NULL
  if (is.null(script_path)) {
    problem <- score_problem(model, script_path_for(rds_path))
    if (!is.null(problem)) fail("%s", problem)
    tryCatch(merge_args(list(), predict_args), error = function(e) fail("%s", conditionMessage(e)))
  } else {
    if (length(predict_args) > 0) {
      fail("predict_args are given to the default predict(), but %s defines score(): drop predict_args from %s.json or use the values in score()",
           script_path, name)
    }
    script <- source_script(script_path, fail)
    run_init(script, model, script_path, fail)
  }
  list(
    model = model,
    score = make_scorer(name, model, script, script_path, predict_args),
    class = class(model),
    packages = packages,
    has_script = !is.null(script),
    schema = tryCatch(bridge_schema(model), error = function(e) {
      fail("cannot read the columns it needs (%s); declare them in %s.json", conditionMessage(e), name)
    })
  )
}

# readRDS does not load the packages of the classes it reads (step 2 does), and a namespace the object refers
# to that is not installed is silently replaced by globalenv(): only the file itself can fail here.
read_model <- function(path, fail) {
  if (!file.exists(path)) fail("cannot read %s: no such file", path)
  tryCatch(readRDS(path), error = function(e) fail("cannot read %s: %s", path, conditionMessage(e)))
}

# Packages whose namespace must be loaded before predict(): from a map for the classes the bridge knows, else
# the package of an already registered predict() method, the package that defines an S4 class, or the
# installed package whose NAMESPACE registers a predict() method for one of the classes.
class_packages <- c(
  lm = "stats", glm = "stats", mlm = "stats", nls = "stats", loess = "stats",
  randomForest = "randomForest", ranger = "ranger", gbm = "gbm", rpart = "rpart", svm = "e1071",
  glmnet = "glmnet", cv.glmnet = "glmnet"
)

model_packages <- function(model) {
  known <- intersect(class(model), names(class_packages))
  if (length(known) > 0) return(unname(class_packages[known[1]]))
  if (isS4(model) && !is.null(attr(class(model), "package"))) return(attr(class(model), "package"))
  for (cl in class(model)) {
    method <- utils::getS3method("predict", cl, optional = TRUE)
    if (!is.null(method)) {
      pkg <- environmentName(environment(method))
      return(if (pkg %in% c("", "R_GlobalEnv", "base")) character(0) else pkg)
    }
  }
  installed_predict_package(class(model))
}

# Scans the NAMESPACE file of each installed package for S3method(predict, <class>): a few hundred small
# files, read once per model of an unknown class.
installed_predict_package <- function(classes) {
  files <- Sys.glob(file.path(.libPaths(), "*", "NAMESPACE"))
  namespaces <- lapply(files, readLines, warn = FALSE)
  for (cl in classes) {
    pattern <- sprintf("S3method\\(\\s*[\"']?predict[\"']?\\s*,\\s*[\"']?\\Q%s\\E[\"']?\\s*[,)]", cl)
    hit <- vapply(namespaces, function(lines) any(grepl(pattern, lines, perl = TRUE)), logical(1))
    if (any(hit)) return(basename(dirname(files[which(hit)[1]])))
  }
  character(0)
}

load_package <- function(pkg, fail) {
  if (!nzchar(system.file(package = pkg))) fail("%s", package_missing_message(pkg))
  tryCatch(loadNamespace(pkg), error = function(e) {
    fail("package '%s' is installed but does not load: %s", pkg, conditionMessage(e))
  })
  invisible(pkg)
}

package_missing_message <- function(pkg) {
  sprintf("package '%s' is needed to load this model but is not installed (on Debian: apt-get install r-cran-%s)",
          pkg, tolower(pkg))
}

script_path_for <- function(rds_path) sub("\\.rds$", ".R", rds_path, ignore.case = TRUE)

# Evaluates the script one top-level expression at a time, so an error says on which line it happened.
source_script <- function(path, fail) {
  if (!file.exists(path)) fail("cannot read %s: no such file", path)
  exprs <- tryCatch(parse(path, keep.source = TRUE, encoding = "UTF-8"), error = function(e) {
    fail("%s failed: %s", path, conditionMessage(e))
  })
  env <- new.env(parent = globalenv())
  refs <- attr(exprs, "srcref")
  for (i in seq_along(exprs)) {
    tryCatch(eval(exprs[[i]], env), error = function(e) {
      fail("%s failed at line %d: %s", path, refs[[i]][1], conditionMessage(e))
    })
  }
  score <- get0("score", envir = env, inherits = FALSE)
  if (!is.function(score) || !takes_two_arguments(score)) fail("%s must define score(model, newdata)", path)
  init <- get0("init", envir = env, inherits = FALSE)
  if (!is.null(init) && !is.function(init)) fail("%s defines init, but not as a function init(model)", path)
  env
}

takes_two_arguments <- function(f) {
  args <- names(formals(f))
  length(args) >= 2 || "..." %in% args
}

run_init <- function(script, model, path, fail) {
  init <- get0("init", envir = script, inherits = FALSE)
  if (is.null(init)) return(invisible())
  tryCatch(init(model), error = function(e) fail("init(model) in %s failed: %s", path, conditionMessage(e)))
  invisible()
}

# score(newdata) for the worker. Errors name the model (and the script); warnings are errors here too (see
# stop_on_warning in score.R): a script that means to ignore one says so with suppressWarnings().
make_scorer <- function(name, model, script, script_path, predict_args) {
  if (is.null(script)) {
    prefix <- sprintf("model '%s': ", name)
    run <- function(newdata) bridge_score(model, newdata, predict_args)
  } else {
    prefix <- sprintf("model '%s': score() in %s failed: ", name, basename(script_path))
    user_score <- get("score", envir = script, inherits = FALSE)
    run <- function(newdata) user_score(model, newdata)
  }
  function(newdata) {
    tryCatch(stop_on_warning(run(newdata)), error = function(e) {
      stop(paste0(prefix, conditionMessage(e)), call. = FALSE)
    })
  }
}
