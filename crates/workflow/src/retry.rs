//! Retry decisions: how long to wait before the next attempt of a step, and whether
//! there is one. Policy failures never retry (they go to the dead-letter queue); a
//! non-retryable exit code or the last allowed attempt gives up.

use crate::model::{FailureClass, RetryPolicies, RetryPolicy};

/// What to do after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Start the next attempt after this many milliseconds.
    RetryAfter(u64),
    /// Refused by policy: park it in the dead-letter queue.
    DeadLetter,
    /// No retry can help: the step fails.
    GiveUp,
}

/// The wait after attempt `attempt` (1-based) failed: `initial * backoff^(attempt-1)`,
/// capped at `max_interval`, then spread by `jitter` (`random` is uniform in [0, 1)):
/// the result lies in `[d * (1 - jitter), d * (1 + jitter)]`, still capped. Computed in
/// floating point and saturated, so no input panics; out-of-range `jitter`, `backoff`
/// and `random` are clamped to their ranges and attempt 0 counts as attempt 1.
pub fn delay_ms(policy: &RetryPolicy, attempt: u32, random: f64) -> u64 {
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    #[allow(
        clippy::cast_precision_loss,
        reason = "intervals are far below 2^52 ms"
    )]
    let (initial, max) = (
        policy.initial_interval_ms as f64,
        policy.max_interval_ms as f64,
    );
    // `0 * inf` would be NaN: a zero interval stays zero however far it grows.
    let base = if initial <= 0.0 {
        0.0
    } else {
        (initial * policy.backoff.max(1.0).powi(exponent)).min(max)
    };
    // NaN jitter means none; NaN randomness means the middle of the spread.
    let jitter = if policy.jitter.is_nan() {
        0.0
    } else {
        policy.jitter.clamp(0.0, 1.0)
    };
    let random = if random.is_nan() {
        0.5
    } else {
        random.clamp(0.0, 1.0)
    };
    let spread = 1.0 - jitter + 2.0 * jitter * random;
    let value = (base * spread).clamp(0.0, max.max(0.0));
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to [0, max_interval] above"
    )]
    let ms = value.round() as u64;
    ms
}

/// Decides what follows a failed attempt of a step with these policies.
pub fn decide(
    policies: &RetryPolicies,
    class: FailureClass,
    attempt: u32,
    exit_code: Option<i32>,
    random: f64,
) -> RetryDecision {
    let policy = match class {
        FailureClass::Policy => return RetryDecision::DeadLetter,
        FailureClass::Timeout => &policies.timeout,
        FailureClass::Capacity => &policies.capacity,
        FailureClass::Error => &policies.error,
    };
    if exit_code.is_some_and(|code| policies.non_retryable_exit_codes.contains(&code)) {
        return RetryDecision::GiveUp;
    }
    if attempt >= policy.max_attempts {
        return RetryDecision::GiveUp;
    }
    RetryDecision::RetryAfter(delay_ms(policy, attempt, random))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32, jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_interval_ms: 1_000,
            backoff: 2.0,
            max_interval_ms: 10_000,
            jitter,
        }
    }

    fn policies() -> RetryPolicies {
        RetryPolicies {
            timeout: policy(2, 0.0),
            capacity: policy(5, 0.0),
            error: policy(3, 0.0),
            non_retryable_exit_codes: vec![2],
        }
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let p = policy(10, 0.0);
        let delays: Vec<u64> = (1..=6).map(|a| delay_ms(&p, a, 0.5)).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(delay_ms(&p, u32::MAX, 0.5), 10_000);
    }

    #[test]
    fn jitter_spreads_within_bounds() {
        let p = policy(10, 0.5);
        assert_eq!(delay_ms(&p, 1, 0.0), 500);
        assert_eq!(delay_ms(&p, 1, 0.5), 1_000);
        assert!(delay_ms(&p, 1, 0.999) <= 1_500);
        assert_eq!(delay_ms(&p, 5, 0.999), 10_000);
    }

    #[test]
    fn huge_and_odd_inputs_do_not_panic() {
        let p = RetryPolicy {
            max_attempts: u32::MAX,
            initial_interval_ms: u64::MAX,
            backoff: 10.0,
            max_interval_ms: u64::MAX,
            jitter: 1.0,
        };
        for attempt in [0, 1, 2, 1_000, u32::MAX] {
            for random in [0.0, 0.5, 0.999_999, 1.0, -3.0, 7.0, f64::NAN] {
                let _ = delay_ms(&p, attempt, random);
            }
        }
        // Out-of-range fields are clamped rather than trusted.
        let odd = RetryPolicy {
            max_attempts: 3,
            initial_interval_ms: 1_000,
            backoff: 0.1,
            max_interval_ms: 5_000,
            jitter: 4.0,
        };
        assert!(delay_ms(&odd, 3, 0.99) <= 5_000);
        assert_eq!(delay_ms(&policy(3, 0.0), 3, f64::NAN), 4_000);
        let zero = RetryPolicy {
            initial_interval_ms: 0,
            ..policy(3, 0.0)
        };
        assert_eq!(delay_ms(&zero, u32::MAX, 0.5), 0);
        // Attempt 0 is read as the first.
        assert_eq!(delay_ms(&policy(3, 0.0), 0, 0.5), 1_000);
    }

    #[test]
    fn decisions_by_class() {
        let p = policies();
        assert_eq!(
            decide(&p, FailureClass::Policy, 1, None, 0.5),
            RetryDecision::DeadLetter
        );
        assert_eq!(
            decide(&p, FailureClass::Error, 1, Some(1), 0.5),
            RetryDecision::RetryAfter(1_000)
        );
        assert_eq!(
            decide(&p, FailureClass::Error, 1, Some(2), 0.5),
            RetryDecision::GiveUp
        );
        assert_eq!(
            decide(&p, FailureClass::Error, 3, None, 0.5),
            RetryDecision::GiveUp
        );
        assert_eq!(
            decide(&p, FailureClass::Timeout, 2, None, 0.5),
            RetryDecision::GiveUp
        );
        assert_eq!(
            decide(&p, FailureClass::Capacity, 4, None, 0.5),
            RetryDecision::RetryAfter(8_000)
        );
    }
}
