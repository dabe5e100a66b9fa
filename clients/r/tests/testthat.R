# R CMD check runs this; the tests need a server (RB_URL, RB_USER, RB_PASSWORD) and skip without one.
# tests/integration/test_r_client.py starts one and runs tests/testthat against it.
library(testthat)
library(rbridge)
test_check("rbridge")
