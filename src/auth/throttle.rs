//! Login throttling: failures are counted per username and per client address in
//! a sliding window; past the limit, logins are refused with 429 until the oldest
//! failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LoginThrottle {
    window: Duration,
    max_per_user: usize,
    max_per_address: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_user: HashMap<String, VecDeque<Instant>>,
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
}

impl LoginThrottle {
    pub fn new(window: Duration, max_per_user: u32, max_per_address: u32) -> LoginThrottle {
        LoginThrottle {
            window,
            max_per_user: max_per_user.max(1) as usize,
            max_per_address: max_per_address.max(1) as usize,
            state: Mutex::new(State::default()),
        }
    }

    /// `Err(seconds)` to wait when this username or address is locked out.
    pub fn check(&self, username: &str, address: Option<IpAddr>) -> Result<(), u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None;
        if let Some(list) = state.by_user.get_mut(username) {
            wait = wait.max(self.locked_for(list, self.max_per_user, now));
        }
        if let Some(address) = address
            && let Some(list) = state.by_address.get_mut(&address)
        {
            wait = wait.max(self.locked_for(list, self.max_per_address, now));
        }
        match wait {
            Some(duration) => Err(duration.as_secs().max(1)),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, username: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory under a spray of usernames: forget entries whose window passed.
        if state.by_user.len() > 100_000 {
            let window = self.window;
            state
                .by_user
                .retain(|_, list| list.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        state
            .by_user
            .entry(username.to_owned())
            .or_default()
            .push_back(now);
        if let Some(address) = address {
            state.by_address.entry(address).or_default().push_back(now);
        }
    }

    /// A successful login clears the username's failures (not the address's).
    pub fn record_success(&self, username: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.by_user.remove(username);
    }

    fn locked_for(
        &self,
        list: &mut VecDeque<Instant>,
        max: usize,
        now: Instant,
    ) -> Option<Duration> {
        while list
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            list.pop_front();
        }
        if list.len() >= max {
            let oldest = *list.get(list.len() - max)?;
            Some(self.window.saturating_sub(now.duration_since(oldest)))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_success_clears_user() {
        let throttle = LoginThrottle::new(Duration::from_secs(60), 3, 10);
        let addr: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            assert!(throttle.check("bob", Some(addr)).is_ok());
            throttle.record_failure("bob", Some(addr));
        }
        let wait = throttle.check("bob", Some(addr)).expect_err("locked");
        assert!(wait > 0 && wait <= 60);
        assert!(throttle.check("carol", Some(addr)).is_ok());
        throttle.record_success("bob");
        assert!(throttle.check("bob", Some(addr)).is_ok());
    }
}
