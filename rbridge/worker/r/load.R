# bridge_load(name, rds_path, script_path, predict_args): read one model, make it ready to score, and say
# what it is.
#
# Returns list(model, score, class, packages, has_script, schema, na_problem), where score(newdata) gives the
# raw prediction: the script's score(model, newdata) when there is a script, else bridge_score(model, newdata,
# predict_args) with one answer per row (r/missing.R), and na_problem says why rows with NA are refused (NULL:
# they are not). Steps, in order:
#   1. readRDS the model;
#   2. attach the packages <name>.json names, load the namespace of the package its class needs (readRDS does
#      not, and predict() only dispatches to methods of loaded namespaces) and attach the packages whose
#      functions its formula calls (r/packages.R);
#   3. source the script, if any, into an environment of its own (child of globalenv(), so two scripts never
#      clash) and call its init(model) once;
#   4. read the schema from the object (bridge_schema).
# Every failure is an R error that names the model and says what to fix.
#
# A script must define score(model, newdata); a script with only init() is refused rather than falling back to
# the default predict(), because a misspelt score() would then go unnoticed. (To keep the default scoring and
# still run setup code, define score <- function(model, newdata) bridge_score(model, newdata).) predict_args
# only reach the default scoring: with a script they are refused, for the same reason.

bridge_load <- function(name, rds_path, script_path = NULL, predict_args = list(), packages = character(0)) {
  # Messages reach callers: name files, never the server's folders.
  folder <- paste0(dirname(rds_path), "/")
  fail <- function(fmt, ...) {
    stop(gsub(folder, "", sprintf("model '%s': %s", name, sprintf(fmt, ...)), fixed = TRUE), call. = FALSE)
  }
  for (pkg in packages) load_package(pkg, fail, attach = TRUE)
  model <- read_model(rds_path, fail)
  if (isS4(model)) for (pkg in attr(class(model), "package")) load_package(pkg, fail) # defines its superclasses
  found <- tryCatch(model_packages(model), error = function(e) fail("%s", conditionMessage(e)))
  for (pkg in found) load_package(pkg, fail)
  uses <- tryCatch(formula_packages(model), error = function(e) if (is.null(script_path)) fail("%s", conditionMessage(e)))
  for (pkg in uses) load_package(pkg, fail, attach = TRUE)
  packages <- unique(c(packages, found, uses))
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
    }),
    na_problem = if (is.null(script)) na_problem(model)
  )
}

# readRDS does not load the packages of the classes it reads (step 2 does), and a namespace the object refers
# to that is not installed is silently replaced by globalenv(): only the file itself can fail here.
read_model <- function(path, fail) {
  if (!file.exists(path)) fail("cannot read %s: no such file", path)
  tryCatch(readRDS(path), error = function(e) fail("cannot read %s: %s", path, conditionMessage(e)))
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
    run <- function(newdata) one_answer_per_row(function(d) bridge_score(model, d, predict_args), newdata)
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
