//! The `haul` binary: parse the command line, set up logging, run the daemon or a client
//! command, and turn errors into messages and exit codes. Nothing else happens here.

use std::process::ExitCode;

use clap::Parser;
use haul::cli::{Cli, Command, ServeArgs};
use haul::config::{self, Overrides};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("haul: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let served = runtime.block_on(serve(args));
            // The daemon has drained what it waits for; don't let a blocking task that is
            // still reading a file (a checksum, say) hold the exit.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("haul: {e:#}");
                    serve_exit_code(&e)
                }
            }
        }
        Command::Openapi => match haul::api::openapi::yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("haul: cannot render the OpenAPI document: {e}");
                ExitCode::FAILURE
            }
        },
        _ => match runtime.block_on(haul::cli::run_client(cli)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("haul: {e}");
                ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
            }
        },
    }
}

/// Exit code of a daemon that stops on an error: 7 when its database file is not one it may
/// use (damaged, another application's, from a newer haul), so that a supervisor can tell it
/// from a failure that a restart might mend; 1 otherwise.
fn serve_exit_code(err: &anyhow::Error) -> ExitCode {
    let incompatible = err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<haul::store::StoreError>(),
            Some(haul::store::StoreError::Incompatible(_))
        )
    });
    if incompatible {
        ExitCode::from(7)
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let flags = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        download_root: args.download_root,
        max_concurrent_jobs: args.max_concurrent_jobs,
    };
    let loaded = config::load(args.config.as_deref(), &flags)?;
    haul::telemetry::init(loaded.settings.log_format);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let app = haul::app::App::build(loaded.settings).await?;
    app.run(shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
