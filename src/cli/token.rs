//! `azgate token NAME`: a credential's bare token (or key) on stdout, for scripts; with
//! `--video ID` or `--project ID`, a read-only viewer token of a `video_indexer`
//! credential for that video or project — the token a vending route would hand out.
//! Nothing but the token ever goes to stdout.

use std::process::ExitCode;

use super::{EXIT_CONFIG, runtime};
use crate::config::ConfigSource;
use crate::credentials::video_indexer::{Scope, valid_id};
use crate::credentials::{Credential, CredentialSet};
use crate::env::Env;
use crate::logging;

/// Parses `--video` and `--project`: one path segment of `[A-Za-z0-9_-]{1,64}`, the ids
/// azgate passes on to Video Indexer. clap reports a bad one as a usage error (exit 2).
pub(super) fn video_indexer_id(id: &str) -> Result<String, String> {
    if valid_id(id) {
        Ok(id.to_string())
    } else {
        Err(
            "not a Video Indexer id: one path segment of A-Z, a-z, 0-9, '-' and '_', \
             at most 64 characters"
                .to_string(),
        )
    }
}

/// What `--video` or `--project` asked for.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ViewerAsk {
    /// The flag used, for messages.
    flag: &'static str,
    scope: Scope,
}

/// The viewer token `--video` or `--project` asked for (clap lets at most one through,
/// each already checked by `video_indexer_id`).
pub(super) fn viewer_ask(video: Option<String>, project: Option<String>) -> Option<ViewerAsk> {
    match (video, project) {
        (Some(id), _) => Some(ViewerAsk {
            flag: "--video",
            scope: Scope::Video(id),
        }),
        (None, Some(id)) => Some(ViewerAsk {
            flag: "--project",
            scope: Scope::Project(id),
        }),
        (None, None) => None,
    }
}

/// `azgate token NAME [--video ID | --project ID]`: needs only NAME's variables (and its
/// `arm` credential's); a problem elsewhere in the file does not stop it.
pub(super) fn token(source: ConfigSource, name: &str, viewer: Option<ViewerAsk>) -> ExitCode {
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
        // A name the config does not have is a problem of the command line and config,
        // like one in NAME's own definition: exit 2, not the fetch failure's 1.
        return ExitCode::from(EXIT_CONFIG);
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let fetched = match &viewer {
        None => runtime
            .block_on(credential.reveal())
            .map_err(|err| err.to_string()),
        Some(ask) => match viewer_token(credential, ask) {
            Ok(fetch) => runtime.block_on(fetch),
            Err(message) => {
                eprintln!("azgate: {message}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    match fetched {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("azgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The fetch of the viewer token `ask` names, or why `credential` cannot give one (it is
/// not a Video Indexer credential: a usage problem, not a failure).
fn viewer_token<'a>(
    credential: &'a Credential,
    ask: &'a ViewerAsk,
) -> Result<impl Future<Output = Result<String, String>> + 'a, String> {
    let Some(scoped) = credential.video_indexer() else {
        return Err(format!(
            "credential \"{}\" is a {} credential; {} needs a video_indexer credential",
            credential.name(),
            credential.kind(),
            ask.flag
        ));
    };
    let source = scoped.source().clone();
    Ok(async move {
        // Read-only whatever the credential's permission: a restricted viewer token on
        // ARM accounts, an allowEdit=false token on classic ones.
        match source.fetch_viewer(&ask.scope).await {
            Ok(token) => Ok(token.value.expose().to_string()),
            Err(err) => Err(format!(
                "credential \"{}\" gave no viewer token for {}: {}",
                credential.name(),
                described(&ask.scope),
                err.message
            )),
        }
    })
}

fn described(scope: &Scope) -> String {
    match scope {
        Scope::Account => "the account".to_string(),
        Scope::Project(id) => format!("project \"{id}\""),
        Scope::Video(id) => format!("video \"{id}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_one_flag_names_the_scope() {
        assert_eq!(video_indexer_id("07ec9e38d4").as_deref(), Ok("07ec9e38d4"));
        for bad in ["", "a/b", "a b", "a%2Fb", "é", &"x".repeat(65)] {
            assert!(video_indexer_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            viewer_ask(Some("v1".into()), None),
            Some(ViewerAsk {
                flag: "--video",
                scope: Scope::Video("v1".into())
            })
        );
        assert_eq!(
            viewer_ask(None, Some("p1".into())),
            Some(ViewerAsk {
                flag: "--project",
                scope: Scope::Project("p1".into())
            })
        );
        assert_eq!(viewer_ask(None, None), None);
    }
}
