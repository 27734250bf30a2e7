//! The `agentbox` command; see `agentbox --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    agentbox_host::cli::main().await
}
