//! Waiting for a condition instead of sleeping a fixed time: poll it until it holds, and
//! fail naming it when the deadline passes. The poll interval starts at 1 ms and doubles
//! up to 100 ms, so a condition that is almost there costs little and a slow one (a
//! Prometheus scrape) is not hammered.

use std::time::{Duration, Instant};

const FIRST_POLL: Duration = Duration::from_millis(1);
const MAX_POLL: Duration = Duration::from_millis(100);

/// Block until `cond` holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_for_value(what, timeout, || cond().then_some(()))
}

/// Block until `probe` gives a value, and return it; panics naming `what` after `timeout`.
pub fn wait_for_value<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    match poll(timeout, probe) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// [`wait_for`] for async tests: the runtime keeps running while it waits.
pub async fn wait_for_async(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    wait_for_value_async(what, timeout, async || cond().await.then_some(())).await
}

/// [`wait_for_value`] for async tests.
pub async fn wait_for_value_async<T>(
    what: &str,
    timeout: Duration,
    probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    match poll_async(timeout, probe).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Poll `probe` until it gives a value or `timeout` passes, without failing: for a test
/// that asserts on the last state itself, with a message of its own.
pub async fn poll_async<T>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_POLL;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // The poll interval, not a wait for something to happen.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// [`poll_async`] for blocking tests.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_POLL;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // The poll interval, not a wait for something to happen.
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_POLL);
    }
}
