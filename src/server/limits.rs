//! Process limits the accept path depends on, settled before the listeners open: the
//! open-files limit (every connection is a file descriptor, two while it is proxied) and
//! the listen backlog (how many connections the kernel queues while azgate is at
//! `max_connections`).

/// Used when the system does not say (`/proc` missing): Linux's default since 5.4.
const FALLBACK_SOMAXCONN: u32 = 4096;

/// Descriptors azgate needs beyond its client connections: listeners, the config watch,
/// certificate files, token requests, logs.
const FD_HEADROOM: u64 = 64;

/// File descriptors `max_connections` can use: a client connection plus, while its request
/// is proxied, one upstream connection, plus headroom.
pub fn files_needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(FD_HEADROOM)
}

/// The soft limit to ask for: the hard limit, when that is higher. `None` means leave it.
/// (`None` in a limit means unlimited.)
fn raised_soft_limit(soft: Option<u64>, hard: Option<u64>) -> Option<Option<u64>> {
    match (soft, hard) {
        (None, _) => None,
        (Some(soft), Some(hard)) if hard <= soft => None,
        (Some(_), hard) => Some(hard),
    }
}

/// The warning when `soft` descriptors are too few for `max_connections`.
fn shortfall(soft: Option<u64>, max_connections: usize) -> Option<String> {
    let soft = soft?;
    let needed = files_needed(max_connections);
    (soft < needed).then(|| {
        format!(
            "the open-files limit is {soft}, below the {needed} that server.max_connections = \
             {max_connections} can use (two per proxied connection, plus {FD_HEADROOM}); beyond \
             it new connections wait in the backlog and upstream connections fail. Raise the \
             hard limit (`ulimit -Hn`, systemd LimitNOFILE=, the container runtime's nofile) \
             or lower server.max_connections"
        )
    })
}

/// Raises the soft open-files limit to the hard limit, and warns when even that is too
/// low for `max_connections`. Never fails: a limit that cannot be changed is reported.
pub fn raise_open_files(max_connections: usize) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        let mut soft = before.current;
        if let Some(target) = raised_soft_limit(before.current, before.maximum) {
            let wanted = rustix::process::Rlimit {
                current: target,
                maximum: before.maximum,
            };
            match setrlimit(Resource::Nofile, wanted) {
                Ok(()) => {
                    soft = getrlimit(Resource::Nofile).current;
                    tracing::info!(
                        "open-files limit raised from {} to {}",
                        describe(before.current),
                        describe(soft)
                    );
                }
                Err(err) => tracing::warn!(
                    "cannot raise the open-files limit from {} to {}: {err}",
                    describe(before.current),
                    describe(target)
                ),
            }
        }
        if let Some(warning) = shortfall(soft, max_connections) {
            tracing::warn!("{warning}");
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}

fn describe(limit: Option<u64>) -> String {
    limit.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

/// The system's cap on listen backlogs (`net.core.somaxconn`), the default backlog.
pub fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(FALLBACK_SOMAXCONN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_goes_up_to_the_hard_limit_only() {
        let cases = [
            // (soft, hard, new soft)
            (Some(1024), Some(524_288), Some(Some(524_288))),
            (Some(1024), None, Some(None)),
            (Some(4096), Some(4096), None),
            (None, None, None),
        ];
        for (soft, hard, want) in cases {
            assert_eq!(raised_soft_limit(soft, hard), want, "{soft:?} {hard:?}");
        }
    }

    #[test]
    fn too_few_descriptors_for_max_connections_is_reported() {
        assert_eq!(files_needed(10_000), 20_064);
        let warning = shortfall(Some(256), 10_000).unwrap();
        assert!(
            warning.contains("256") && warning.contains("20064"),
            "{warning}"
        );
        assert!(shortfall(Some(1_048_576), 10_000).is_none());
        assert!(shortfall(None, 10_000).is_none(), "unlimited is enough");
    }
}
