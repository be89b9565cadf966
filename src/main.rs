//! The `haul` binary: parse the command line, set up logging, run the daemon or a client
//! command, and turn errors into messages and exit codes. Nothing else happens here.

use std::process::ExitCode;

use clap::Parser;
use haul::cli::{Cli, Command, ServeArgs};
use haul::config::{self, Overrides};

fn main() -> ExitCode {
    tune_allocator();
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

/// Keeps glibc from handing download buffers back to the kernel as soon as they are freed.
///
/// By default glibc serves blocks above 128 KiB (then above the largest freed one) with their
/// own `mmap`, and trims a thread's heap with `madvise(MADV_DONTNEED)` once its free top
/// passes twice that. A download frees and allocates such buffers hundreds of times a second,
/// so each time the kernel unmapped pages and faulted in fresh zeroed ones: a fifth of the
/// daemon's CPU in a fast download (bench case 1). Blocks under 4 MiB now come from the heap
/// (a plain-HTTP connection's read buffer is a little over 1 MiB) and a heap keeps up to
/// 16 MiB free before giving it back — CPU per GiB fell by about a fifth and peak RSS stayed
/// under 55 MiB. A `GLIBC_TUNABLES` that sets malloc parameters wins.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned_by_user =
            std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if !tuned_by_user {
            #[expect(
                unsafe_code,
                reason = "mallopt only sets two of glibc's malloc parameters; it is called first \
                          thing in main, before any other thread exists"
            )]
            // SAFETY: mallopt takes plain integers and is called before any thread starts.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
            }
        }
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
