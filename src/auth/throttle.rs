//! Throttling of password guessing and of registrations.
//!
//! Logins are throttled so that online guessing stays bounded without letting
//! anyone lock a user out (OWASP's "device cookie" scheme with progressive delays):
//!
//! - A client without a device token for the username ("untrusted") shares that
//!   username's failure count with every other untrusted client. The first
//!   `free_failures` failures within the window cost nothing; after that each
//!   attempt must wait 1 s, 2 s, 4 s... (at most `max_delay`) after the previous
//!   failure. Guessing a password stays bounded, and the right password is let in
//!   again within `max_delay` at worst.
//! - A device that signed in as this user before presents its device token and is
//!   counted on its own: other clients' failures never delay it.
//! - Failures from one client address (untrusted attempts only) are capped within
//!   the window, a hard limit that only ever holds back that address.
//!
//! Attempts in flight (their password still being verified) count as failures
//! until they end, so concurrent guesses cannot all pass the check.
//!
//! Registrations are counted per client address within their own window: each
//! attempt that gets as far as hashing a password counts.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept per map before those with nothing left to remember are dropped
/// (a spray of usernames must not grow memory without bound).
const PRUNE_ABOVE: usize = 50_000;
/// What a client is told to wait while another attempt for the same key is
/// still being verified.
const BUSY_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub window: Duration,
    /// Failures per username (or per device) before delays start.
    pub free_failures: u32,
    /// Failures from one address within the window before it is refused.
    pub max_failures_per_address: u32,
    /// The longest delay between attempts.
    pub max_delay: Duration,
}

#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginLimits,
    state: Mutex<LoginState>,
}

#[derive(Debug, Default)]
struct LoginState {
    by_user: HashMap<String, Delays>,
    by_device: HashMap<String, Delays>,
    by_address: HashMap<IpAddr, Window>,
}

/// What an attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Counted {
    /// An untrusted client: the username's shared count and the address.
    Untrusted {
        username: String,
        address: Option<IpAddr>,
    },
    /// A device that signed in as this user before: its own count only.
    Device(String),
}

/// A login attempt that passed the throttle and holds its place until it ends.
/// Dropping it without [`LoginAttempt::failed`] or [`LoginAttempt::succeeded`]
/// (an error on the way) just frees the place.
#[derive(Debug)]
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    counted: Counted,
    open: bool,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> LoginThrottle {
        LoginThrottle {
            limits: LoginLimits {
                free_failures: limits.free_failures.max(1),
                max_failures_per_address: limits.max_failures_per_address.max(1),
                ..limits
            },
            state: Mutex::new(LoginState::default()),
        }
    }

    /// Starts an attempt for `username`: `device` is the id from a valid device
    /// token issued to this username, if the client presented one. `Err(seconds)`
    /// to wait.
    pub fn begin(
        &self,
        username: &str,
        address: Option<IpAddr>,
        device: Option<&str>,
    ) -> Result<LoginAttempt<'_>, u64> {
        self.begin_at(username, address, device, Instant::now())
    }

    fn begin_at(
        &self,
        username: &str,
        address: Option<IpAddr>,
        device: Option<&str>,
        now: Instant,
    ) -> Result<LoginAttempt<'_>, u64> {
        let limits = self.limits;
        let mut guard = self.lock();
        let state = &mut *guard;
        let counted = match device {
            Some(device) => {
                let delays = entry(&mut state.by_device, device.to_owned(), now, limits.window)
                    .forget_old(now, limits.window);
                if let Some(wait) = delays.wait(now, &limits) {
                    return Err(seconds(wait));
                }
                delays.in_flight += 1;
                Counted::Device(device.to_owned())
            }
            None => {
                let user_wait = state
                    .by_user
                    .get_mut(username)
                    .and_then(|d| d.forget_old(now, limits.window).wait(now, &limits));
                let address_wait = address.and_then(|a| {
                    state
                        .by_address
                        .get_mut(&a)
                        .and_then(|w| w.wait(now, limits.window, limits.max_failures_per_address))
                });
                if let Some(wait) = user_wait.max(address_wait) {
                    return Err(seconds(wait));
                }
                entry(&mut state.by_user, username.to_owned(), now, limits.window).in_flight += 1;
                if let Some(address) = address {
                    entry(&mut state.by_address, address, now, limits.window).in_flight += 1;
                }
                Counted::Untrusted {
                    username: username.to_owned(),
                    address,
                }
            }
        };
        Ok(LoginAttempt {
            throttle: self,
            counted,
            open: true,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(&self, counted: &Counted, outcome: Outcome, now: Instant) {
        let mut guard = self.lock();
        let state = &mut *guard;
        match counted {
            Counted::Device(device) => {
                if let Some(delays) = state.by_device.get_mut(device) {
                    delays.end(outcome, now);
                }
            }
            Counted::Untrusted { username, address } => {
                if let Some(delays) = state.by_user.get_mut(username) {
                    delays.end(outcome, now);
                }
                if let Some(window) = address.and_then(|a| state.by_address.get_mut(&a)) {
                    window.in_flight = window.in_flight.saturating_sub(1);
                    if outcome == Outcome::Failed {
                        window.failures.push_back(now);
                    }
                }
            }
        }
    }
}

impl LoginAttempt<'_> {
    /// The password was wrong (or the username unknown).
    pub fn failed(mut self) {
        self.close(Outcome::Failed);
    }

    /// The password was right: the count this attempt was held against starts
    /// over (not the address's).
    pub fn succeeded(mut self) {
        self.close(Outcome::Succeeded);
    }

    fn close(&mut self, outcome: Outcome) {
        self.close_at(outcome, Instant::now());
    }

    fn close_at(&mut self, outcome: Outcome, now: Instant) {
        if std::mem::take(&mut self.open) {
            self.throttle.end(&self.counted, outcome, now);
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        self.close(Outcome::Abandoned);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    Abandoned,
}

/// Consecutive failures of one username or device, for progressive delays.
#[derive(Debug, Default)]
struct Delays {
    failures: u32,
    last_failure: Option<Instant>,
    in_flight: u32,
}

impl Delays {
    /// Failures older than the window are forgotten.
    fn forget_old(&mut self, now: Instant, window: Duration) -> &mut Self {
        if self
            .last_failure
            .is_some_and(|at| now.duration_since(at) >= window)
        {
            self.failures = 0;
            self.last_failure = None;
        }
        self
    }

    /// How long the next attempt must wait, if at all.
    fn wait(&self, now: Instant, limits: &LoginLimits) -> Option<Duration> {
        if self.failures + self.in_flight < limits.free_failures {
            return None;
        }
        // Past the free failures, one attempt at a time.
        if self.in_flight > 0 {
            return Some(BUSY_WAIT);
        }
        let excess = self.failures + 1 - limits.free_failures;
        let delay = Duration::from_secs(1u64 << (excess - 1).min(30)).min(limits.max_delay);
        let ready = self.last_failure? + delay;
        (now < ready).then(|| ready - now)
    }

    fn end(&mut self, outcome: Outcome, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Failed => {
                self.failures = self.failures.saturating_add(1);
                self.last_failure = Some(now);
            }
            Outcome::Succeeded => {
                self.failures = 0;
                self.last_failure = None;
            }
            Outcome::Abandoned => {}
        }
    }
}

/// Events (failures, registrations) within a sliding window, plus those in flight.
#[derive(Debug, Default)]
struct Window {
    failures: VecDeque<Instant>,
    in_flight: u32,
}

impl Window {
    /// How long until one more event fits under `max`, if it does not now.
    fn wait(&mut self, now: Instant, window: Duration, max: u32) -> Option<Duration> {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
        let (max, in_flight) = (max as usize, self.in_flight as usize);
        let events = self.failures.len() + in_flight;
        if events < max {
            return None;
        }
        if in_flight >= max {
            return Some(BUSY_WAIT);
        }
        // Room is made when this failure leaves the window.
        self.failures
            .get(events - max)
            .map(|at| window.saturating_sub(now.duration_since(*at)))
    }
}

/// Whether an entry has nothing left to remember (nothing in flight, nothing
/// within the window), so it can be dropped.
trait Idle {
    fn idle(&self, now: Instant, window: Duration) -> bool;
}

impl Idle for Delays {
    fn idle(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0
            && self
                .last_failure
                .is_none_or(|at| now.duration_since(at) >= window)
    }
}

impl Idle for Window {
    fn idle(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0
            && self
                .failures
                .back()
                .is_none_or(|at| now.duration_since(*at) >= window)
    }
}

/// The entry of `key`, made if missing; a map grown past [`PRUNE_ABOVE`] first
/// drops the entries with nothing left to remember.
fn entry<K: Hash + Eq, V: Default + Idle>(
    map: &mut HashMap<K, V>,
    key: K,
    now: Instant,
    window: Duration,
) -> &mut V {
    if map.len() >= PRUNE_ABOVE && !map.contains_key(&key) {
        map.retain(|_, value| !value.idle(now, window));
    }
    map.entry(key).or_default()
}

fn seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Registrations per client address within a window.
#[derive(Debug)]
pub struct RegistrationThrottle {
    window: Duration,
    max_per_address: u32,
    by_address: Mutex<HashMap<IpAddr, Window>>,
}

impl RegistrationThrottle {
    pub fn new(window: Duration, max_per_address: u32) -> RegistrationThrottle {
        RegistrationThrottle {
            window,
            max_per_address: max_per_address.max(1),
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one registration attempt from `address`, or `Err(seconds)` to wait.
    pub fn admit(&self, address: Option<IpAddr>) -> Result<(), u64> {
        self.admit_at(address, Instant::now())
    }

    fn admit_at(&self, address: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let Some(address) = address else {
            return Ok(());
        };
        let mut map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let window = entry(&mut map, address, now, self.window);
        if let Some(wait) = window.wait(now, self.window, self.max_per_address) {
            return Err(seconds(wait));
        }
        window.failures.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const OTHER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    fn throttle(free: u32, per_address: u32) -> LoginThrottle {
        LoginThrottle::new(LoginLimits {
            window: Duration::from_secs(900),
            free_failures: free,
            max_failures_per_address: per_address,
            max_delay: Duration::from_secs(60),
        })
    }

    fn fail(
        t: &LoginThrottle,
        user: &str,
        address: Option<IpAddr>,
        device: Option<&str>,
        now: Instant,
    ) {
        let mut attempt = t.begin_at(user, address, device, now).expect("admitted");
        attempt.close_at(Outcome::Failed, now);
    }

    #[test]
    fn delays_grow_after_the_free_failures_and_are_capped() {
        let t = throttle(3, 1000);
        let start = Instant::now();
        for _ in 0..3 {
            fail(&t, "bob", ADDR, None, start);
        }
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let wait = t.begin_at("bob", OTHER, None, now).expect_err("delayed");
            waits.push(wait);
            now += Duration::from_secs(wait);
            fail(&t, "bob", OTHER, None, now);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Another username is not affected.
        assert!(t.begin_at("carol", OTHER, None, now).is_ok());
        // Failures older than the window are forgotten.
        assert!(
            t.begin_at("bob", OTHER, None, now + Duration::from_secs(900))
                .is_ok()
        );
    }

    #[test]
    fn attempts_in_flight_count() {
        let t = throttle(2, 1000);
        let now = Instant::now();
        let first = t.begin_at("bob", ADDR, None, now).expect("first");
        let second = t.begin_at("bob", ADDR, None, now).expect("second");
        assert_eq!(t.begin_at("bob", ADDR, None, now).expect_err("third"), 1);
        drop(first);
        let third = t
            .begin_at("bob", ADDR, None, now)
            .expect("a place was freed");
        drop((second, third));
        let t = throttle(100, 2);
        let _a = t.begin_at("a", ADDR, None, now).expect("a");
        let _b = t.begin_at("b", ADDR, None, now).expect("b");
        assert!(
            t.begin_at("c", ADDR, None, now).is_err(),
            "the address is full"
        );
        assert!(t.begin_at("c", OTHER, None, now).is_ok());
    }

    #[test]
    fn a_known_device_is_not_held_back_by_others() {
        let t = throttle(3, 5);
        let now = Instant::now();
        for n in 0..20 {
            let user = if n < 10 {
                "admin".to_owned()
            } else {
                format!("user{n}")
            };
            if let Ok(mut attempt) = t.begin_at(&user, ADDR, None, now) {
                attempt.close_at(Outcome::Failed, now);
            }
        }
        assert!(
            t.begin_at("admin", OTHER, None, now).is_err(),
            "admin delayed"
        );
        assert!(
            t.begin_at("other", ADDR, None, now).is_err(),
            "address full"
        );
        // The admin's own device, from the same address.
        let attempt = t
            .begin_at("admin", ADDR, Some("dev1"), now)
            .expect("device");
        attempt.succeeded();
        // Its own failures do slow it down.
        for _ in 0..3 {
            fail(&t, "admin", ADDR, Some("dev1"), now);
        }
        assert!(t.begin_at("admin", ADDR, Some("dev1"), now).is_err());
        assert!(t.begin_at("admin", ADDR, Some("dev2"), now).is_ok());
    }

    #[test]
    fn success_clears_the_username() {
        let t = throttle(2, 1000);
        let now = Instant::now();
        fail(&t, "bob", ADDR, None, now);
        fail(&t, "bob", ADDR, None, now);
        assert!(t.begin_at("bob", ADDR, None, now).is_err());
        let later = now + Duration::from_secs(1);
        t.begin_at("bob", ADDR, None, later)
            .expect("after the delay")
            .succeeded();
        assert!(t.begin_at("bob", ADDR, None, later).is_ok());
    }

    #[test]
    fn registrations_per_address() {
        let t = RegistrationThrottle::new(Duration::from_secs(3600), 2);
        let now = Instant::now();
        assert!(t.admit_at(ADDR, now).is_ok());
        assert!(t.admit_at(ADDR, now).is_ok());
        assert_eq!(t.admit_at(ADDR, now), Err(3600));
        assert!(t.admit_at(OTHER, now).is_ok());
        assert!(t.admit_at(ADDR, now + Duration::from_secs(3600)).is_ok());
    }
}
