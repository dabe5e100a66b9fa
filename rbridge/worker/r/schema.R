# bridge_schema(model): the columns a model needs, read from what R kept in the fitted object.
#
# Returns a list of columns in predictor order, each
#   list(name = "col", type = "numeric"|"integer"|"factor"|"character"|"logical"|"date"|"datetime"|"difftime",
#        levels = <character vector> or NULL, ordered = TRUE/FALSE)
# plus tz = "<Olson name>" for datetime (POSIXct; "UTC" when the column had none) and units = "<units>" for
# difftime (the numbers the caller sends are in these units).
# or NULL when the object does not say. The worker builds newdata from this (factor columns with exactly these
# levels in this order), so a wrong type or level order would make R mispredict without a word. The rule is
# therefore: never guess. When any column's type or levels cannot be read from the object, the whole schema is
# NULL and the user declares it in <name>.json.

schema_column <- function(name, type, levels = NULL, ordered = FALSE, tz = NULL, units = NULL) {
  c(list(name = name, type = type, levels = if (is.null(levels)) NULL else as.character(levels),
         ordered = isTRUE(ordered)), if (!is.null(tz)) list(tz = tz), if (!is.null(units)) list(units = units))
}

bridge_schema <- function(model) UseMethod("bridge_schema")

# Any object with terms (and, where R keeps them, xlevels): the lm/glm/rpart/svm/randomForest-formula way.
bridge_schema.default <- function(model) {
  tt <- model_terms(model)
  if (is.null(tt)) return(NULL)
  xlevels <- if (is.list(model)) model$xlevels else NULL
  if (is.null(xlevels)) xlevels <- attr(model, "xlevels")
  schema_from_terms(tt, xlevels, prototypes = model_prototypes(model))
}

# lm keeps the model frame ($model) and glm also the training data ($data): they give the exact class of each
# column (integer stays integer, which dataClasses reports as "numeric").
bridge_schema.lm <- function(model) {
  schema_from_terms(terms(model), model$xlevels, prototypes = model_prototypes(model))
}

# rpart keeps terms and attr(, "xlevels") (character columns included, in training order).
bridge_schema.rpart <- function(model) {
  schema_from_terms(model$terms, attr(model, "xlevels"), prototypes = model_prototypes(model))
}

# randomForest: formula fits keep terms; forest$xlevels holds levels of unordered factors only (the formula
# interface turns ordered factors into numbers first, and character columns into numbers by their sorted values,
# so neither has levels to report: NULL). x/y fits keep only the forest: ncat > 1 is an unordered factor with
# forest$xlevels, ncat == 1 with levels is an ordered factor (used as its codes), anything else is numeric.
bridge_schema.randomForest <- function(model) {
  forest <- model$forest
  if (is.null(forest)) return(NULL)
  xlevels <- Filter(is.character, forest$xlevels)
  if (!is.null(model$terms)) return(schema_from_terms(model$terms, xlevels))
  vars <- names(forest$ncat)
  if (is.null(vars)) vars <- rownames(model$importance)
  if (is.null(vars)) return(NULL)
  lapply(vars, function(v) {
    lev <- xlevels[[v]]
    if (is.null(lev)) schema_column(v, "numeric")
    else schema_column(v, "factor", lev, ordered = forest$ncat[[v]] == 1)
  })
}

# ranger keeps covariate.levels only when fitted with respect.unordered.factors = "order" on a data.frame: NULL
# entries are numeric, the others factor (character columns too) with the levels in ranger's own split order
# (predict matches them by label, so that order is safe to send). In the default "ignore" mode and in "partition"
# mode no levels are kept and numeric and factor columns look alike: NULL, the user supplies <name>.json.
bridge_schema.ranger <- function(model) {
  forest <- model$forest
  levels <- forest$covariate.levels
  if (is.null(forest) || is.null(levels)) return(NULL)
  vars <- forest$independent.variable.names
  lapply(vars, function(v) {
    lev <- levels[[v]]
    if (is.null(lev)) schema_column(v, "numeric") else schema_column(v, "factor", lev)
  })
}

# gbm: var.type 0 is numeric, except that ordered factors are also 0 and keep their labels in var.levels;
# var.type k > 0 is a factor with the k levels in var.levels (predict.gbm maps newdata by these labels).
bridge_schema.gbm <- function(model) {
  vars <- model$var.names
  if (is.null(vars)) return(NULL)
  Map(function(v, type, lev) {
    if (type > 0) schema_column(v, "factor", lev)
    else if (is.character(lev)) schema_column(v, "factor", lev, ordered = TRUE)
    else schema_column(v, "numeric")
  }, vars, model$var.type, model$var.levels, USE.NAMES = FALSE)
}

# e1071 svm: formula fits keep terms but no factor levels (the support vectors hold dummy columns, which lose the
# first level), so any factor or character predictor makes the schema NULL. x/y fits take a numeric matrix:
# the columns of the support vectors, matched by position at predict time.
bridge_schema.svm <- function(model) {
  if (!is.null(model$terms)) return(schema_from_terms(model$terms, NULL))
  if (isTRUE(model$sparse)) return(NULL)
  vars <- colnames(model$SV)
  if (is.null(vars)) return(NULL)
  lapply(vars, schema_column, type = "numeric")
}

# The core: one column per variable of delete.response(terms). Types come from attr(terms, "dataClasses"),
# keyed by variable; a variable seen only inside a call (log(x), offset(z)) has no entry there and is typed from
# the prototypes (training data or model frame kept in the object) or, failing that, makes the schema NULL.
schema_from_terms <- function(tt, xlevels, prototypes = list()) {
  vars <- all.vars(delete.response(tt))
  classes <- attr(tt, "dataClasses")
  columns <- lapply(vars, function(v) {
    proto <- prototype_column(prototypes, v)
    cls <- if (v %in% names(classes)) classes[[v]] else NA_character_
    if (is.na(cls)) return(column_from_prototype(v, proto))
    column_from_data_class(v, cls, xlevels[[v]], proto)
  })
  if (any(vapply(columns, is.null, logical(1)))) return(NULL)
  columns
}

column_from_data_class <- function(name, cls, levels, proto) {
  switch(cls,
    numeric = schema_column(name, if (is.integer(proto)) "integer" else "numeric"),
    logical = schema_column(name, "logical"),
    factor = if (!is.null(levels)) schema_column(name, "factor", levels),
    ordered = if (!is.null(levels)) schema_column(name, "factor", levels, ordered = TRUE),
    character = if (!is.null(levels)) schema_column(name, "character", levels),
    other = column_from_prototype(name, proto), # Date, POSIXct, difftime: from the data the object kept
    NULL) # "nmatrix.k", or levels not kept: unknown
}

# Only when the variable is a plain column of a data.frame the object kept; factor levels from raw data are the
# ones the user's formula saw (e.g. inside relevel()), so they are the right ones to send.
column_from_prototype <- function(name, x) {
  if (is.null(x) || !is.null(dim(x))) return(NULL)
  if (is.factor(x)) return(schema_column(name, "factor", levels(x), ordered = is.ordered(x)))
  if (inherits(x, "Date")) return(schema_column(name, "date"))
  if (inherits(x, "POSIXct")) {
    tz <- attr(x, "tzone")
    return(schema_column(name, "datetime", tz = if (is.null(tz) || !nzchar(tz[1])) "UTC" else tz[1]))
  }
  if (inherits(x, "difftime")) return(schema_column(name, "difftime", units = units(x)))
  if (!is.null(oldClass(x))) return(NULL) # POSIXlt, other classes: not a wire type
  if (is.character(x)) return(NULL)        # which values are allowed is not kept
  if (is.logical(x)) return(schema_column(name, "logical"))
  if (is.integer(x)) return(schema_column(name, "integer"))
  if (is.double(x)) return(schema_column(name, "numeric"))
  NULL
}

# lme4 (S4): the fixed and random effects' variables, typed from the model frame it keeps in @frame.
bridge_schema.merMod <- function(model) {
  schema_from_frame(stats::formula(model), model@frame)
}

# nlme's lme and gls keep their data ($data); lme's grouping variables come from its random formula.
bridge_schema.lme <- function(model) {
  groups <- lapply(names(model$groups), as.name)
  schema_from_frame(stats::formula(model), model$data, extra = vapply(groups, as.character, ""))
}

bridge_schema.gls <- function(model) {
  schema_from_frame(stats::formula(model), model$data)
}

schema_from_frame <- function(formula, frame, extra = character(0)) {
  if (!is.data.frame(frame)) return(NULL)
  vars <- union(all.vars(formula[[length(formula)]]), extra)
  columns <- lapply(vars, function(v) column_from_prototype(v, frame[[v]]))
  if (any(vapply(columns, is.null, logical(1)))) return(NULL)
  columns
}

model_terms <- function(model) {
  tt <- tryCatch(stats::terms(model), error = function(e) NULL)
  if (inherits(tt, "terms")) tt else NULL
}

# Data frames the object keeps whose columns show the training classes: glm's $data, lm's model frame.
model_prototypes <- function(model) {
  if (!is.list(model) || isS4(model)) return(list())
  Filter(is.data.frame, list(model$data, model$model))
}

prototype_column <- function(prototypes, name) {
  for (p in prototypes) if (name %in% names(p)) return(p[[name]])
  NULL
}
