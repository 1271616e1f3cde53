//! `midge_rr`: sends a request and prints the response, like mosquitto_rr (same flags, output
//! and exit codes). The work is in `midge_client::tools`.

fn main() {
    std::process::exit(midge_client::tools::run(midge_client::tools::Tool::Rr));
}
