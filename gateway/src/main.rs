//! `roster`: run a node. See `roster --help`.

use clap::Parser;
use roster_gateway::config::Cli;

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    if let Some(cmd) = cli.command.take() {
        return cmd.run();
    }
    let cfg = match cli.load(std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roster: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if cli.print_config {
        match toml::to_string(&cfg) {
            Ok(s) => {
                print!("{s}");
                return std::process::ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("roster: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    roster_gateway::telemetry::init_logging(&cfg.log_level, &cfg.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("roster")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roster: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match roster_gateway::server::start(cfg).await {
            Ok(_node) => {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("interrupted; exiting");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "roster failed to start");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
