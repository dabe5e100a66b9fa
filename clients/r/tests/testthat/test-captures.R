# read_captures() on files the server wrote: the checked-in sample (tests/testthat/captures, written
# by a real server with capture on), and, when tests/integration/test_rollout.py runs this file,
# the folder it just captured (RB_CAPTURES) against what the server answered (RB_CAPTURES_EXPECTED).

test_that("read_captures gives one row per captured row, with version, request id and prediction", {
  got <- read_captures(test_path("captures"))
  expect_equal(nrow(got), 4)
  expect_equal(got$request_id, c("sample-1", "sample-1", "sample-2", "sample-2"))
  expect_equal(got$row, c(1L, 2L, 1L, 2L))
  expect_equal(got$version, rep("2.0", 4))
  expect_equal(got$wt, c(2.5, 3.5, 2.6, 3.6))
  expect_false("hp" %in% names(got))
  expect_true(all(grepl("^[0-9a-f]{16}$", got$cyl)))
  expect_equal(got$prediction, c(21.721178466679014, 18.515565210486145, 21.400617141059726, 18.195003884866864))
  expect_s3_class(got$time, "POSIXct")
})

test_that("read_captures reads what the server just captured", {
  folder <- Sys.getenv("RB_CAPTURES")
  if (folder == "") {
    empty <- tempfile()
    dir.create(empty)
    expect_equal(nrow(read_captures(empty)), 0)       # a folder with nothing captured yet
    return(invisible())
  }
  expected <- jsonlite::fromJSON(Sys.getenv("RB_CAPTURES_EXPECTED"))
  got <- read_captures(folder)
  got <- got[got$request_id %in% expected$request_id, ]
  got <- got[order(got$request_id, got$row), ]
  expected <- expected[order(expected$request_id, expected$row), ]
  expect_equal(got$request_id, expected$request_id)
  expect_equal(got$row, expected$row)
  expect_equal(got$wt, expected$wt)
  expect_equal(got$prediction, expected$prediction)
  expect_equal(got$version, expected$version)
})
