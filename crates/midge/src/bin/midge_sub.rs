//! `midge_sub`: subscribes and prints messages, like mosquitto_sub (same flags, output
//! and exit codes). The work is in `midge_client::tools`.

fn main() {
    std::process::exit(midge_client::tools::run(midge_client::tools::Tool::Sub));
}
