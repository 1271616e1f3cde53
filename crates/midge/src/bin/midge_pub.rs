//! `midge_pub`: publishes a message, like mosquitto_pub (same flags, output
//! and exit codes). The work is in `midge_client::tools`.

fn main() {
    std::process::exit(midge_client::tools::run(midge_client::tools::Tool::Pub));
}
