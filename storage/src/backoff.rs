//! Exponential backoff with jitter, for retrying storage (agent uploads,
//! coordinator manifests) and for agents reconnecting to the coordinator.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`, each stretched by up to
/// half of itself at random, so agents that lost a service together do not
/// all come back in the same instant.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The next delay: the current step plus up to half of it at random.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.0..=0.5);
        step + step.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        let steps = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000];
        for (delay, step) in delays.iter().zip(steps) {
            let step = Duration::from_millis(step);
            assert!(
                *delay >= step && *delay <= step.mul_f64(1.5),
                "{delay:?} for {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(150));
    }
}
