//! The command line: `sandbox-provisioner [serve] [FLAGS]`.

use clap::{Parser, Subcommand};

use crate::config::ServeArgs;

/// Isolated code-execution sandboxes for AI agents on Kubernetes, behind a small REST API.
#[derive(Debug, Parser)]
#[command(
    name = "sandbox-provisioner",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, accepted without the subcommand too (it is the default).
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the REST API (the default).
    Serve(Box<ServeArgs>),
    /// Print the OpenAPI document of the REST API (as committed in openapi.json).
    Openapi,
    /// Check the configuration, the cluster connection, permissions and namespace; print each
    /// check with its fix and exit non-zero when any fails.
    Doctor(Box<ServeArgs>),
    /// Print the SHA-256 of an API key, as PROVISIONER_TENANTS holds it (api_key_sha256). The
    /// key is read from standard input when not given (so that it stays out of the shell's
    /// history).
    HashKey {
        /// The key; read from standard input when absent.
        key: Option<String>,
    },
    /// Run the node agent: binds claimed warm pool Pods' thread data into their containers on
    /// this node (one per node; see docs/operations.md, "Warm pools").
    NodeAgent(Box<crate::agent::AgentArgs>),
    /// Exit 0 when the local service answers /health (for container HEALTHCHECKs).
    Healthcheck {
        /// The service's listen address.
        #[arg(long, env = "PROVISIONER_LISTEN", default_value = "0.0.0.0:8002")]
        listen: String,
    },
}

impl Cli {
    /// The serve flags, whether given with or without the subcommand; None for other commands.
    pub fn serve_args(self) -> Option<ServeArgs> {
        match self.command {
            Some(Command::Serve(args)) => Some(*args),
            None => Some(self.serve),
            Some(
                Command::Openapi
                | Command::Doctor(_)
                | Command::HashKey { .. }
                | Command::NodeAgent(_)
                | Command::Healthcheck { .. },
            ) => None,
        }
    }
}
