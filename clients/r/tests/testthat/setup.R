# The server to test against: tests/integration/test_r_client.py starts one and sets these.
server_url <- Sys.getenv("RB_URL")
connect <- function() {
  skip_if(server_url == "", "no server: set RB_URL, RB_USER, RB_PASSWORD (a publisher)")
  rb_connect(server_url, Sys.getenv("RB_USER"), Sys.getenv("RB_PASSWORD"))
}
