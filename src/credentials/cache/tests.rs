//! The token cache's behaviour on tokio's paused clock: single flight, refresh ahead,
//! backoff, the forced refresh after a 401, background tending and the fetch timeout.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

type Answer = dyn Fn(usize) -> Result<(String, Duration), FetchError> + Send + Sync;

/// A scripted source: each fetch waits `delay`, then asks `answer` for the result.
struct Scripted {
    fetches: Arc<AtomicUsize>,
    delay: Duration,
    answer: Box<Answer>,
}

impl TokenSource for Scripted {
    fn fetch(&self) -> super::super::token::FetchFuture<'_> {
        Box::pin(async move {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            let (value, lifetime) = (self.answer)(n)?;
            Token::new(value, lifetime)
        })
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
}

fn cache(
    delay: Duration,
    answer: impl Fn(usize) -> Result<(String, Duration), FetchError> + Send + Sync + 'static,
) -> (Arc<TokenCache>, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let source = Scripted {
        fetches: fetches.clone(),
        delay,
        answer: Box::new(answer),
    };
    (TokenCache::new("test", Box::new(source)), fetches)
}

const HOUR: Duration = Duration::from_secs(3600);

/// Lets spawned fetch tasks run up to their first await.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_cold_requests_share_one_fetch() {
    let (cache, fetches) = cache(Duration::from_millis(200), |n| Ok((format!("t{n}"), HOUR)));
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await.map(|t| t.value.expose().to_string()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "t1");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn refresh_happens_in_the_background_without_blocking() {
    let (cache, fetches) = cache(Duration::from_secs(5), |n| Ok((format!("t{n}"), HOUR)));
    assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
    // 5 min before expiry the refresh is due; the request must not wait for it.
    tokio::time::advance(HOUR - Duration::from_secs(290)).await;
    let started = Instant::now();
    assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "a request waited on the refresh"
    );
    settle().await;
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "the refresh started");
    // While it runs, requests keep the current token and start nothing new.
    assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(cache.token().await.unwrap().value.expose(), "t2");
}

#[tokio::test(start_paused = true)]
async fn refresh_in_hint_is_honoured() {
    let fetches = Arc::new(AtomicUsize::new(0));
    struct Hinted(Arc<AtomicUsize>);
    impl TokenSource for Hinted {
        fn fetch(&self) -> super::super::token::FetchFuture<'_> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Token::new(format!("t{n}"), 2 * HOUR)?.with_refresh_in(Some(HOUR)))
            })
        }
        fn describe(&self) -> String {
            "hinted".into()
        }
    }
    let cache = TokenCache::new("hinted", Box::new(Hinted(fetches.clone())));
    cache.token().await.unwrap();
    tokio::time::advance(HOUR - Duration::from_secs(1)).await;
    cache.token().await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    cache.token().await.unwrap();
    settle().await;
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn no_expired_token_is_ever_handed_out_across_rotations() {
    // Ten-minute tokens, requests every 7 s for three hours, fetches taking 3 s.
    let (cache, fetches) = cache(Duration::from_secs(3), |n| {
        Ok((format!("t{n}"), Duration::from_secs(600)))
    });
    let end = Instant::now() + 3 * HOUR;
    let mut seen = std::collections::HashSet::new();
    while Instant::now() < end {
        let token = cache.token().await.unwrap();
        let now = Instant::now();
        assert!(
            now + token.margin() < token.expires_at,
            "an expiring token was handed out"
        );
        seen.insert(token.value.expose().to_string());
        tokio::time::sleep(Duration::from_secs(7)).await;
    }
    let n = fetches.load(Ordering::SeqCst);
    assert!(
        (30..=40).contains(&n),
        "{n} fetches for 3 h of 10-minute tokens"
    );
    assert!(seen.len() >= 30);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_share_one_attempt_per_window() {
    let (cache, fetches) = cache(Duration::ZERO, |_| {
        Err(FetchError::new("AADSTS7000215: bad secret"))
    });
    let err = cache.token().await.unwrap_err();
    assert!(err.message.contains("AADSTS7000215"));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // Inside the 1 s window: answered at once from the last error, no new fetch.
    for _ in 0..100 {
        assert!(cache.token().await.is_err());
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // Second failure: a 2 s window.
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    tokio::time::advance(Duration::from_millis(600)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
    assert!(cache.status().last_error.unwrap().contains("AADSTS7000215"));
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_endpoint_stretches_the_backoff() {
    let (cache, fetches) = cache(Duration::ZERO, |_| {
        Err(FetchError::new("throttled").with_retry_after(Some(Duration::from_secs(20))))
    });
    assert!(cache.token().await.is_err());
    tokio::time::advance(Duration::from_secs(19)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(cache.token().await.is_err());
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_valid_token_is_served_through_an_outage() {
    let (cache, fetches) = cache(Duration::ZERO, |n| {
        if n == 1 {
            Ok(("t1".into(), HOUR))
        } else {
            Err(FetchError::new("HTTP 503"))
        }
    });
    cache.token().await.unwrap();
    tokio::time::advance(HOUR - Duration::from_secs(200)).await;
    // The refresh fails in the background; the still-valid token keeps flowing.
    for _ in 0..50 {
        assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let attempts = fetches.load(Ordering::SeqCst);
    assert!(
        (2..=10).contains(&attempts),
        "{attempts} refresh attempts in 150 s"
    );
    // Past the expiry margin the token is no longer handed out.
    tokio::time::advance(Duration::from_secs(40)).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(cache.token().await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_is_replaced_at_most_once_per_interval() {
    let (cache, fetches) = cache(Duration::ZERO, |n| Ok((format!("t{n}"), HOUR)));
    let t1 = cache.token().await.unwrap();
    assert!(cache.reject(&t1));
    let t2 = cache.token().await.unwrap();
    assert_eq!(t2.value.expose(), "t2");
    // Rejecting the old token again is answered by the newer one, without a fetch.
    assert!(cache.reject(&t1));
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // An upstream that refuses every token cannot make azgate loop.
    assert!(!cache.reject(&t2));
    assert_eq!(cache.token().await.unwrap().value.expose(), "t2");
    tokio::time::advance(FORCED_REFRESH_INTERVAL + Duration::from_millis(1)).await;
    assert!(cache.reject(&t2));
    assert_eq!(cache.token().await.unwrap().value.expose(), "t3");
}

#[tokio::test(start_paused = true)]
async fn tending_retries_with_backoff_and_refreshes_ahead_without_traffic() {
    let (cache, fetches) = cache(Duration::ZERO, |n| {
        if n <= 3 {
            Err(FetchError::new("HTTP 503"))
        } else {
            Ok((format!("t{n}"), HOUR))
        }
    });
    assert_eq!(cache.tend(), None, "a cache nobody used is left alone");
    assert_eq!(fetches.load(Ordering::SeqCst), 0);
    assert!(cache.token().await.is_err());
    // Failure 1: the next attempt is due after the 1 s backoff, not before.
    let started = Instant::now();
    let due = cache.tend().unwrap();
    assert_eq!(due - started, Duration::from_secs(1));
    assert_eq!(cache.status().next_attempt_in, Some(Duration::from_secs(1)));
    let mut attempts = Vec::new();
    while fetches.load(Ordering::SeqCst) < 4 {
        match cache.tend() {
            Some(due) => tokio::time::sleep_until(due).await,
            None => {
                attempts.push(Instant::now() - started);
                settle().await;
            }
        }
    }
    // Retries at 1 s, then 2 s and 4 s later: the cache's own backoff.
    let secs: Vec<u64> = attempts.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [1, 3, 7]);
    assert!(cache.status().has_token);
    assert_eq!(cache.status().next_attempt_in, None);
    // A held token is refreshed at its refresh point, 5 min before expiry.
    let due = cache.tend().unwrap();
    assert_eq!(due - Instant::now(), HOUR - Duration::from_secs(300));
    tokio::time::sleep_until(due).await;
    assert_eq!(cache.tend(), None);
    settle().await;
    assert_eq!(fetches.load(Ordering::SeqCst), 5);
    assert_eq!(cache.token().await.unwrap().value.expose(), "t5");
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_never_ends_is_cut_off() {
    let (cache, _) = cache(Duration::from_secs(3600 * 24), |_| {
        Ok(("late".into(), HOUR))
    });
    let err = cache.token().await.unwrap_err();
    assert!(err.message.contains("did not answer"), "{}", err.message);
}
