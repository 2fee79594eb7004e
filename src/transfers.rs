//! Caps on the long transfers one user may have running at once (uploads,
//! conversation exports): each holds a connection, a temp file or database
//! reads for as long as the client takes, so one user (or one buggy script)
//! opening hundreds of them would crowd everyone else out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::LimitsConfig;
use crate::error::AppError;

/// `Retry-After` of a transfer refused for being one too many.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The transfers in progress, per kind.
pub struct Transfers {
    pub uploads: UserSlots,
    pub exports: UserSlots,
}

impl Transfers {
    pub fn new(limits: &LimitsConfig) -> Transfers {
        Transfers {
            uploads: UserSlots::new(limits.max_uploads_per_user),
            exports: UserSlots::new(limits.max_exports_per_user),
        }
    }
}

/// At most `max` slots per user.
pub struct UserSlots {
    max: usize,
    held: Arc<Mutex<HashMap<i64, usize>>>,
}

impl UserSlots {
    pub fn new(max: usize) -> UserSlots {
        UserSlots {
            max: max.max(1),
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `user_id`, held until the guard is dropped; 429
    /// `rate_limited` when the user already holds every slot.
    pub fn take(&self, user_id: i64) -> Result<Slot, AppError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(user_id).or_insert(0);
        if *count >= self.max {
            return Err(AppError::RateLimited {
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
        *count += 1;
        Ok(Slot {
            user_id,
            held: self.held.clone(),
        })
    }
}

/// One transfer in progress; gives its slot back when dropped.
#[derive(Debug)]
pub struct Slot {
    user_id: i64,
    held: Arc<Mutex<HashMap<i64, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_user_and_come_back() {
        let slots = UserSlots::new(2);
        let a1 = slots.take(1).expect("first");
        let _a2 = slots.take(1).expect("second");
        let refused = slots.take(1).expect_err("third");
        assert_eq!(refused.code(), "rate_limited");
        let _b = slots.take(2).expect("another user");
        drop(a1);
        let _a3 = slots.take(1).expect("a slot came back");
        assert!(slots.take(1).is_err());
    }
}
