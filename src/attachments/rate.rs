//! The minimum rate of an upload's body: a client that stops sending, or
//! trickles bytes, is cut off instead of keeping its upload (a temp file, a
//! connection, a place among the user's uploads) open for as long as it likes.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

/// At least `min_bytes` must arrive in every `window`; either being zero turns
/// the check off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub window: Duration,
    pub min_bytes: u64,
}

impl MinRate {
    /// `limits.upload_min_bytes_per_sec` over `limits.upload_rate_window_secs`.
    pub fn per_second(bytes_per_sec: u64, window_secs: u64) -> MinRate {
        MinRate {
            window: Duration::from_secs(window_secs),
            min_bytes: bytes_per_sec.saturating_mul(window_secs),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.window.is_zero() && self.min_bytes > 0
    }
}

/// The body sent less than the minimum in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled;

/// Watches one body: counts what arrives per window.
#[derive(Debug)]
pub struct RateWatch {
    rule: MinRate,
    window_end: Instant,
    bytes: u64,
}

impl RateWatch {
    pub fn start(rule: MinRate) -> RateWatch {
        RateWatch {
            rule,
            window_end: Instant::now() + rule.window,
            bytes: 0,
        }
    }

    /// The body's next item, or [`Stalled`] when a window ends short of the
    /// minimum (while waiting, or when the item comes too late). Call
    /// [`RateWatch::received`] with the size of each item.
    pub async fn next<S>(&mut self, body: &mut S) -> Result<Option<S::Item>, Stalled>
    where
        S: Stream + Unpin,
    {
        if !self.rule.enabled() {
            return Ok(body.next().await);
        }
        loop {
            match tokio::time::timeout_at(self.window_end, body.next()).await {
                Ok(item) => {
                    if Instant::now() >= self.window_end {
                        self.close_window()?;
                    }
                    return Ok(item);
                }
                Err(_) => self.close_window()?,
            }
        }
    }

    pub fn received(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }

    fn close_window(&mut self) -> Result<(), Stalled> {
        if self.bytes < self.rule.min_bytes {
            return Err(Stalled);
        }
        self.bytes = 0;
        self.window_end = Instant::now() + self.rule.window;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(millis: u64, min_bytes: u64) -> MinRate {
        MinRate {
            window: Duration::from_millis(millis),
            min_bytes,
        }
    }

    #[tokio::test]
    async fn a_silent_body_stalls() {
        let mut body = futures_util::stream::pending::<u8>();
        let mut watch = RateWatch::start(rule(20, 1));
        assert_eq!(watch.next(&mut body).await, Err(Stalled));
    }

    #[tokio::test]
    async fn a_trickle_under_the_minimum_stalls() {
        // One byte per 10 ms against 100 bytes per 50 ms.
        let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
            Duration::from_millis(10),
        ));
        let mut body = ticks.map(|_| 1usize);
        let mut watch = RateWatch::start(rule(50, 100));
        let outcome = loop {
            match watch.next(&mut body).await {
                Ok(Some(n)) => watch.received(n),
                other => break other,
            }
        };
        assert_eq!(outcome, Err(Stalled));
    }

    #[tokio::test]
    async fn a_body_at_the_rate_and_a_finished_body_pass() {
        let mut body = futures_util::stream::iter([10usize, 10, 10]);
        let mut watch = RateWatch::start(rule(10_000, 30));
        let mut total = 0;
        while let Some(n) = watch.next(&mut body).await.expect("not stalled") {
            watch.received(n);
            total += n;
        }
        assert_eq!(total, 30);
        // Turned off: waits as long as the body does.
        let mut body = futures_util::stream::iter([1usize]);
        let mut watch = RateWatch::start(MinRate::per_second(0, 30));
        assert_eq!(watch.next(&mut body).await, Ok(Some(1)));
    }
}
