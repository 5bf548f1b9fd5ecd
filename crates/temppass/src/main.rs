//! `temppass`: the server and its admin commands (SPEC.md §10). Parsing only;
//! the work happens in `serve` and `admin`.

mod admin;
mod demo;
mod serve;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// jemalloc, with its background threads, gives freed memory back to the
/// system within about a second (`.cargo/config.toml` sets the decay), even
/// when the server is idle: with glibc's allocator (and with mimalloc, tried)
/// the buffers of thousands of connections that had closed stayed resident
/// for good (docs/exposure.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "temppass", version, about = "A self-hostable TempPass server (Adobe Pass REST API V2 compatible)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The TOML configuration file; without it, the bundled example configuration.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server until SIGINT or SIGTERM.
    Serve(ConfigArg),
    /// Registered applications for dynamic client registration.
    #[command(subcommand)]
    App(AppCommand),
    /// Media token signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Media tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// API keys of the legacy reset API (`DELETE /reset-tempass/v2/reset`).
    #[command(subcommand)]
    Apikey(ApikeyCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Verifies a media token; prints Valid, InvalidFormat, InvalidSignature, Expired or InvalidResource
    /// and exits 0 only for Valid.
    Verify {
        /// The server's key set: a URL (…/.well-known/jwks.json) or a file.
        #[arg(long, value_name = "URL_OR_FILE")]
        jwks: String,
        /// The resource the token must be for.
        #[arg(long)]
        resource: Option<String>,
        /// Allowed clock difference with the server, in seconds.
        #[arg(long, default_value_t = temppass_token::DEFAULT_SKEW_SECS)]
        skew: i64,
        /// The media token (`serializedToken` of a permit), compact or Base64-wrapped.
        token: String,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Creates a key for one service provider and prints it, once, on the last line.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long = "service-provider")]
        service_provider: String,
    },
    /// Revokes a key; the legacy reset API refuses it from the next request.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Registers an application and prints its software statement on the last line.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        name: String,
        /// Service providers the application may act for (repeat, or give several).
        #[arg(long = "service-provider", required = true, num_args = 1..)]
        service_providers: Vec<String>,
        /// Scopes: api:client:v2 (REST API V2), temporary:passes:owner (reset API).
        #[arg(long = "scope", required = true, num_args = 1..)]
        scopes: Vec<String>,
    },
    /// Revokes the application of that name; its tokens stop working at once.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Adds a new signing key; running servers sign with it within 60 s.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Verification is a pure check that needs no runtime and has exit codes of its own.
    if let Command::Token(TokenCommand::Verify { jwks, resource, skew, token }) = &cli.command {
        return verify::run(jwks, resource.as_deref(), *skew, token);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args.config.as_deref()).await,
            Command::App(AppCommand::Create { config, name, service_providers, scopes }) => {
                admin::create_app(config.config.as_deref(), &name, &service_providers, &scopes).await
            }
            Command::App(AppCommand::Revoke { config, name }) => {
                admin::revoke_app(config.config.as_deref(), &name).await
            }
            Command::Key(KeyCommand::Rotate { config }) => admin::rotate_key(config.config.as_deref()).await,
            Command::Apikey(ApikeyCommand::Create { config, service_provider }) => {
                admin::create_api_key(config.config.as_deref(), &service_provider).await
            }
            Command::Apikey(ApikeyCommand::Revoke { config, key }) => {
                admin::revoke_api_key(config.config.as_deref(), &key).await
            }
            // Answered before the runtime started.
            Command::Token(TokenCommand::Verify { .. }) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
