//! Repeated failures are logged once a minute per kind, with how many were held back: a gateway
//! that is down for an hour must not flood the log every heartbeat.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often one kind of failure is logged.
pub(super) const EVERY: Duration = Duration::from_secs(60);

/// The last time each kind was logged and the failures held back since.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    kinds: HashMap<&'static str, (Instant, u64)>,
}

impl Throttle {
    /// Whether a failure of `kind` at `now` is logged: `Some(held back since the last one)` when
    /// it is, `None` (and counted) when it is not.
    pub(super) fn admit(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        match self.kinds.get_mut(kind) {
            Some((logged, held)) if now.saturating_duration_since(*logged) < EVERY => {
                *held += 1;
                None
            }
            Some((logged, held)) => {
                let repeats = *held;
                (*logged, *held) = (now, 0);
                Some(repeats)
            }
            None => {
                self.kinds.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_logged_once_a_minute_with_the_count_held_back() {
        let mut t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.admit("heartbeat", start), Some(0));
        assert_eq!(t.admit("heartbeat", start + Duration::from_secs(10)), None);
        assert_eq!(t.admit("heartbeat", start + Duration::from_secs(59)), None);
        assert_eq!(t.admit("stream", start + Duration::from_secs(59)), Some(0), "kinds are independent");
        assert_eq!(t.admit("heartbeat", start + Duration::from_secs(60)), Some(2));
        assert_eq!(t.admit("heartbeat", start + Duration::from_secs(61)), None);
        assert_eq!(t.admit("heartbeat", start + Duration::from_secs(200)), Some(1));
    }
}
