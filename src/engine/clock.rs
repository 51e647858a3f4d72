//! The vault's clock. For a simulated source it is real time plus an offset kept in the
//! catalog, so `sim advance` can move it forward (a year of policy in seconds) while
//! jobs still see time pass between commands. Other sources use real time.

use chrono::{DateTime, Duration, Utc};
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug)]
pub struct Clock {
    simulated: bool,
    offset_us: AtomicI64,
}

impl Clock {
    pub fn real() -> Clock {
        Clock {
            simulated: false,
            offset_us: AtomicI64::new(0),
        }
    }

    pub fn simulated(offset: Duration) -> Clock {
        Clock {
            simulated: true,
            offset_us: AtomicI64::new(offset.num_microseconds().unwrap_or(0)),
        }
    }

    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }

    pub fn offset(&self) -> Duration {
        Duration::microseconds(self.offset_us.load(Ordering::SeqCst))
    }

    /// Moves a simulated clock so that `now()` reads `t` at this instant.
    pub fn set_now(&self, t: DateTime<Utc>) {
        self.set_offset(self.offset_to(t));
    }

    /// The offset that makes `now()` read `t` at this instant (to save before moving).
    pub fn offset_to(&self, t: DateTime<Utc>) -> Duration {
        t - Utc::now()
    }

    /// Sets a simulated clock's offset (a real clock stays real time).
    pub fn set_offset(&self, off: Duration) {
        if self.simulated {
            self.offset_us
                .store(off.num_microseconds().unwrap_or(0), Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_clock_moves_and_real_does_not() {
        let c = Clock::simulated(Duration::zero());
        let target = Utc::now() + Duration::days(800);
        c.set_now(target);
        assert!((c.now() - target).num_seconds().abs() < 5);
        let r = Clock::real();
        r.set_now(target);
        assert!((r.now() - Utc::now()).num_seconds().abs() < 5);
    }
}
