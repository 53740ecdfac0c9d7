//! Log setup through tracing-subscriber: human-readable by default, JSON on request.
//! `RUST_LOG` refines the level as usual. ANSI colour only when stderr is a terminal (and
//! `NO_COLOR` is unset), so piped and journald logs stay plain text.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(json: bool, verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
