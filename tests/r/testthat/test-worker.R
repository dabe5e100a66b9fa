# r/worker.R: the data.frame the worker builds from typed buffers.

test_that("dates, date-times and difftimes are rebuilt from doubles with their time zone and units", {
  d <- bridge_frame(list(c(19723, NA), c(1704110400, 0), c(1.5, 2), c(2L, 1L)), c("day", "at", "gap", "f"),
                    list(NULL, NULL, NULL, c("b", "a")), c(FALSE, FALSE, FALSE, FALSE), 2L,
                    c("date", "datetime", "difftime", "factor"), c("", "Europe/Berlin", "weeks", ""))
  expect_identical(d$day, as.Date(c("2024-01-01", NA)))
  expect_identical(format(d$at[1], "%Y-%m-%d %H:%M %Z"), "2024-01-01 13:00 CET")
  expect_identical(d$gap, as.difftime(c(1.5, 2), units = "weeks"))
  expect_identical(d$f, factor(c("a", "b"), levels = c("b", "a")))
})
