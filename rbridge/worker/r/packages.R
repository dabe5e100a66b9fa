# Which packages a model needs before predict() gives R's answer, found from the object itself.
#
# readRDS loads no package, and R dispatches predict() only to methods of loaded namespaces, so a model whose
# package is not loaded is silently scored by a parent class's method (mgcv's gam, class c("gam", "glm", "lm"),
# by predict.lm) or refused. Two kinds of packages are found:
#   model_packages(model): the namespace of the most specific class that has a predict() method (and of the more
#     specific classes before it that some package registers methods for), loaded with loadNamespace();
#   formula_packages(model): the packages exporting functions the model's terms call but R does not attach
#     (splines' ns() and bs()), attached with library(), because model.frame() evaluates the terms in the
#     formula's environment, which after readRDS is globalenv() and sees only attached packages.
# Packages named in <name>.json ("packages") are attached first; nothing here then needs to guess for them.

# Classes whose package the bridge knows without looking (stats' own classes: nothing to load beyond stats).
class_packages <- c(
  lm = "stats", glm = "stats", mlm = "stats", nls = "stats", loess = "stats", ppr = "stats", aov = "stats",
  randomForest = "randomForest", ranger = "ranger", gbm = "gbm", rpart = "rpart", svm = "e1071",
  glmnet = "glmnet", cv.glmnet = "glmnet"
)

# The classes predict() dispatches on, most specific first; for an S4 object its S4 superclasses too (an S3
# predict method for a superclass, such as lme4's predict.merMod for lmerMod, is found through them).
model_classes <- function(model) {
  if (isS4(model)) unique(c(class(model), methods::extends(class(model)))) else class(model)
}

base_packages <- c("base", "compiler", "datasets", "graphics", "grDevices", "grid", "methods", "parallel",
                   "splines", "stats", "stats4", "tcltk", "tools", "utils")

model_packages <- function(model) {
  packages <- character(0)
  if (isS4(model) && !is.null(attr(class(model), "package"))) packages <- attr(class(model), "package")
  for (cl in model_classes(model)) {
    if (cl %in% names(class_packages)) return(unique(c(packages, class_packages[[cl]])))
    method <- utils::getS3method("predict", cl, optional = TRUE)
    if (!is.null(method)) return(unique(c(packages, method_package(method))))
    found <- installed_method_packages(cl, "predict")
    if (length(found) > 1) stop(ambiguous_message(cl, found), call. = FALSE)
    if (length(found) == 1) return(unique(c(packages, found)))
    # No predict() for this class anywhere: still load the package that registers its other methods (family,
    # model.frame, ...), so that the parent's predict() calls them; when only one package beyond R's own
    # does (MASS for negbin, beside stats): that one defines the class. (S4 classes name their package.)
    if (!isS4(model)) {
      others <- setdiff(installed_method_packages(cl, NULL), base_packages)
      if (length(others) == 1) packages <- unique(c(packages, others))
    }
  }
  packages
}

method_package <- function(f) {
  pkg <- environmentName(environment(f))
  if (pkg %in% c("", "R_GlobalEnv", "base")) character(0) else pkg
}

ambiguous_message <- function(cl, found) {
  sprintf("several installed packages define predict() for class '%s' (%s): name the one it was fitted with in the model's .json, e.g. \"packages\": [\"%s\"]",
          cl, paste(found, collapse = ", "), found[1])
}

# The NAMESPACE files of the installed packages, read once per R session (a few hundred small files).
namespace_index <- local({
  index <- NULL
  function() {
    if (is.null(index)) {
      files <- Sys.glob(file.path(.libPaths(), "*", "NAMESPACE"))
      files <- files[!duplicated(basename(dirname(files)))] # the first library wins, as for library()
      text <- vapply(files, function(f) paste(readLines(f, warn = FALSE), collapse = "\n"), "")
      index <<- stats::setNames(text, basename(dirname(files)))
    }
    index
  }
})

# Packages whose NAMESPACE registers S3method(<generic>, <cl>) (any generic when generic is NULL).
installed_method_packages <- function(cl, generic) {
  g <- if (is.null(generic)) "[^,)]+" else sprintf("[\"']?\\Q%s\\E[\"']?", generic)
  pattern <- sprintf("S3method\\(\\s*%s\\s*,\\s*[\"']?\\Q%s\\E[\"']?\\s*[,)]", g, cl)
  index <- namespace_index()
  names(index)[grepl(pattern, index, perl = TRUE)]
}

# Kept for the callers that ask for the first package with a predict() method for any of the classes.
installed_predict_package <- function(classes) {
  for (cl in classes) {
    found <- installed_method_packages(cl, "predict")
    if (length(found) > 0) return(found[1])
  }
  character(0)
}

# Packages exporting the functions the terms call that the formula's environment does not see.
formula_packages <- function(model) {
  tt <- model_terms(model)
  if (is.null(tt)) return(character(0))
  env <- environment(tt)
  if (is.null(env)) env <- globalenv()
  tt <- stats::delete.response(tt) # predict() never evaluates the response
  calls <- called_functions(list(tt, attr(tt, "predvars")))
  packages <- character(0)
  for (fn in calls) {
    if (exists(fn, envir = env, mode = "function")) next
    found <- exporting_packages(fn)
    if (length(found) == 0) {
      stop(sprintf("its formula calls %s(), which no installed package exports: install the package that has it and name it in the model's .json (\"packages\")", fn),
           call. = FALSE)
    }
    if (length(found) > 1) {
      stop(sprintf("its formula calls %s(), which several installed packages export (%s): name the right one in the model's .json, e.g. \"packages\": [\"%s\"]",
                   fn, paste(found, collapse = ", "), found[1]), call. = FALSE)
    }
    packages <- union(packages, found)
  }
  packages
}

# Names of the functions called anywhere in the expressions (pkg::f is left out: `::` loads pkg itself).
called_functions <- function(exprs) {
  out <- character(0)
  walk <- function(e) {
    if (!is.call(e)) return()
    head <- e[[1]]
    if (is.symbol(head)) {
      out <<- union(out, as.character(head))
    } else if (is.call(head) && identical(head[[1]], as.name("::"))) {
      return(lapply(as.list(e)[-1], walk))
    }
    lapply(as.list(e), walk)
  }
  lapply(exprs, walk)
  out
}

# Installed packages whose NAMESPACE lists fn in an export(...) directive (exportPattern is not read: a pattern
# that matches everything would name every such package).
exporting_packages <- function(fn) {
  index <- namespace_index()
  hit <- vapply(index, function(text) {
    blocks <- regmatches(text, gregexpr("(?<![A-Za-z.])export\\s*\\(([^)]*)\\)", text, perl = TRUE))[[1]]
    if (length(blocks) == 0) return(FALSE)
    inner <- sub("^export\\s*\\(", "", sub("\\)$", "", blocks))
    inner <- gsub("#[^\n]*", "", inner)
    names <- trimws(gsub("[\"'`]", "", unlist(strsplit(inner, "[,\n]"))))
    fn %in% names
  }, logical(1))
  names(index)[hit]
}

# loadNamespace() for the model's class packages, library() for the ones its formula or the .json names.
load_package <- function(pkg, fail, attach = FALSE) {
  if (!nzchar(system.file(package = pkg))) fail("%s", package_missing_message(pkg))
  tryCatch(if (attach) suppressPackageStartupMessages(library(pkg, character.only = TRUE)) else loadNamespace(pkg),
           error = function(e) fail("package '%s' is installed but does not load: %s", pkg, conditionMessage(e)))
  invisible(pkg)
}

package_missing_message <- function(pkg) {
  sprintf("package '%s' is needed to load this model but is not installed (on Debian: apt-get install r-cran-%s)",
          pkg, tolower(pkg))
}
