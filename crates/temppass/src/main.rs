//! `temppass`: the server and its admin commands (SPEC.md §10). Parsing only;
//! the work happens in `serve` and `admin`.

mod admin;
mod demo;
mod logging;
mod output;
mod serve;
mod stats;
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
    /// The TOML configuration file; without it, the bundled example configuration. A relative
    /// sqlite:// store is found next to this file (without it: in the working directory).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Where an admin command works.
#[derive(Debug, Args)]
struct StoreArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Create the SQLite store if it does not exist yet (`serve` always does). Without it, a
    /// command run against a store that does not exist fails instead of making an empty one.
    #[arg(long)]
    init: bool,
}

impl StoreArgs {
    fn target(&self) -> admin::Target<'_> {
        admin::Target { config: self.config.config.as_deref(), init: self.init }
    }
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
    /// Prints the daily figures per rule: trials started, ended and exhausted, resources used, resets.
    Stats {
        #[command(flatten)]
        store: StoreArgs,
        /// From this day on (YYYY-MM-DD, in each rule's time zone).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Of this service provider only.
        #[arg(long = "service-provider", value_name = "ID")]
        service_provider: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    /// Creates a key for one service provider and prints it, once, alone on stdout.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// The service provider whose trials the key may reset.
        #[arg(long = "service-provider", value_name = "ID")]
        service_provider: String,
    },
    /// Revokes a key; the legacy reset API refuses it within 5 s.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The key, as `apikey create` printed it.
        #[arg(value_name = "KEY")]
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Registers an application and prints its software statement alone on stdout. Safe to
    /// repeat: an application of that name with the same service providers and scopes is kept
    /// and a statement for it printed.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// The application's name, unique among the applications not revoked (1 to 200 characters).
        #[arg(long)]
        name: String,
        /// Service providers the application may act for (repeat, or give several).
        #[arg(long = "service-provider", required = true, num_args = 1..)]
        service_providers: Vec<String>,
        /// Scopes: api:client:v2 (REST API V2), temporary:passes:owner (reset API).
        #[arg(long = "scope", required = true, num_args = 1..)]
        scopes: Vec<String>,
    },
    /// Prints a new software statement for an application that exists, alone on stdout.
    Statement {
        #[command(flatten)]
        store: StoreArgs,
        /// The application's name.
        #[arg(long)]
        name: String,
    },
    /// Revokes the application of that name; its access tokens are refused within
    /// `tokens.access_token_cache` (2 s by default) on every server.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The application's name, as given to `app create`.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Adds a new signing key and prints its kid; running servers sign with it within 60 s.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
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
            Command::App(AppCommand::Create { store, name, service_providers, scopes }) => {
                admin::create_app(store.target(), &name, &service_providers, &scopes).await
            }
            Command::App(AppCommand::Statement { store, name }) => admin::app_statement(store.target(), &name).await,
            Command::App(AppCommand::Revoke { store, name }) => admin::revoke_app(store.target(), &name).await,
            Command::Key(KeyCommand::Rotate { store }) => admin::rotate_key(store.target()).await,
            Command::Apikey(ApikeyCommand::Create { store, service_provider }) => {
                admin::create_api_key(store.target(), &service_provider).await
            }
            Command::Apikey(ApikeyCommand::Revoke { store, key }) => admin::revoke_api_key(store.target(), &key).await,
            // Answered before the runtime started.
            Command::Stats { store, since, service_provider, json } => {
                stats::print(store.target(), since.as_deref(), service_provider.as_deref(), json).await
            }
            Command::Token(TokenCommand::Verify { .. }) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read stdout went away (`| head`): quiet, as a tool killed by SIGPIPE.
        Err(error) if error.is::<output::ClosedPipe>() => ExitCode::from(141),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
