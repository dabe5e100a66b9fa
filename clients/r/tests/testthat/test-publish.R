# Train in this R session, publish, score on the server, compare with predict() here, roll back.

cars <- mtcars
cars$cyl <- factor(cars$cyl)
rows <- cars[c(1, 5, 9, 20, 32), c("wt", "hp", "cyl")]

test_that("a published lm answers exactly what predict() gives, and rollback brings the old answers back", {
  conn <- connect()
  m1 <- lm(mpg ~ wt + hp + cyl, cars)
  v1 <- rb_publish(conn, "r_cars", m1)
  expect_equal(v1$version, 1)
  expect_equal(v1$schema$columns$name, c("wt", "hp", "cyl"))
  expect_identical(rb_predict(conn, "r_cars", rows), unname(predict(m1, rows)))

  m2 <- lm(mpg ~ wt + cyl, cars)
  path <- tempfile(fileext = ".rds")
  saveRDS(m2, path)
  v2 <- rb_publish(conn, "r_cars", path, config = list(version = "2.0", description = "lighter"))
  expect_equal(c(v2$version, v2$label), c("2", "2.0"))
  expect_identical(rb_predict(conn, "r_cars", rows), unname(predict(m2, rows)))

  versions <- rb_versions(conn, "r_cars")
  expect_equal(versions$version, c(1, 2))
  expect_equal(versions$active, c(FALSE, TRUE))
  expect_equal(versions$sha256[2], v2$sha256)

  rb_activate(conn, "r_cars", v1$version)
  expect_identical(rb_predict(conn, "r_cars", rows), unname(predict(m1, rows)))
  expect_true("r_cars" %in% rb_models(conn)$name)
})

test_that("a bad model is refused with R's message and the served version keeps answering", {
  conn <- connect()
  served <- rb_predict(conn, "r_cars", rows)
  err <- tryCatch(rb_publish(conn, "r_cars", lm(mpg ~ wt, cars),
                             score = function(model, newdata) stop("refused on purpose")),
                  rbridge_error = function(e) e)
  expect_s3_class(err, "rbridge_error")
  expect_equal(err$status, 422)
  expect_match(conditionMessage(err), "refused on purpose")
  expect_identical(rb_predict(conn, "r_cars", rows), served)
})

test_that("a score function travels as the model's script", {
  conn <- connect()
  m <- lm(mpg ~ wt + hp + cyl, cars)
  rb_publish(conn, "r_doubled", m, score = function(model, newdata) 2 * predict(model, newdata))
  expect_identical(rb_predict(conn, "r_doubled", rows), unname(2 * predict(m, rows)))
  rb_delete(conn, "r_doubled")
  err <- tryCatch(rb_predict(conn, "r_doubled", rows), rbridge_error = function(e) e)
  expect_equal(err$status, 404)
  expect_equal(rb_versions(conn, "r_doubled")$version, 1)
})

test_that("a classifier answers a factor with the model's levels, or probabilities as a data.frame", {
  skip_if_not_installed("randomForest")
  conn <- connect()
  set.seed(7)
  m <- randomForest::randomForest(Species ~ ., iris, ntree = 25)
  flowers <- iris[c(1, 51, 101, 120, 150), 1:4]
  rb_publish(conn, "r_iris", m)
  expect_identical(rb_predict(conn, "r_iris", flowers), unname(predict(m, flowers)))
  expect_identical(levels(rb_predict(conn, "r_iris", flowers[1, ])), levels(iris$Species))

  rb_publish(conn, "r_iris_prob", m, config = list(predict_args = list(type = "prob")))
  local <- predict(m, flowers, type = "prob")
  remote <- rb_predict(conn, "r_iris_prob", flowers)
  expect_s3_class(remote, "data.frame")
  expect_equal(names(remote), colnames(local))
  expect_identical(unname(as.matrix(remote)), unname(matrix(local, nrow(local))))
})

test_that("errors are conditions carrying the server's status and message", {
  conn <- connect()
  err <- tryCatch(rb_predict(conn, "no_such_model", rows), rbridge_error = function(e) e)
  expect_equal(err$status, 404)
  expect_equal(err$code, "unknown_model")
  err <- tryCatch(rb_connect(server_url, Sys.getenv("RB_USER"), "wrong password"), rbridge_error = function(e) e)
  expect_equal(err$status, 401)
})
