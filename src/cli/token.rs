//! `azgate token NAME`: a credential's bare token (or key) on stdout, for scripts.

use std::process::ExitCode;

use super::{EXIT_CONFIG, runtime};
use crate::config::ConfigSource;
use crate::credentials::CredentialSet;
use crate::env::Env;
use crate::logging;

/// `azgate token NAME`: needs only NAME's variables (and its `arm` credential's); a
/// problem elsewhere in the file does not stop it.
pub(super) fn token(source: ConfigSource, name: &str) -> ExitCode {
    let subset = match source.load_credential(name) {
        Ok(subset) => subset,
        Err(err) => {
            eprintln!("{err}");
            eprintln!(
                "azgate: credential \"{name}\" has {} problem(s)",
                err.problems.len()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::init_quiet();
    let credentials = CredentialSet::build(&subset.credentials, &Env::process());
    let Some(credential) = credentials.get(name) else {
        eprintln!(
            "azgate: no credential named \"{name}\" in {}; known: {}",
            source.display_name(),
            if subset.known.is_empty() {
                "none".to_string()
            } else {
                subset.known.join(", ")
            }
        );
        return ExitCode::FAILURE;
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(credential.reveal()) {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("azgate: {err}");
            ExitCode::FAILURE
        }
    }
}
