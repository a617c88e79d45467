//! Slowing down password guessing: failed logins are counted per client address. The first few
//! are free (typos); each one after that waits twice as long as the one before, first as a
//! delayed 401, then, past [`LoginPolicy::max_delay`], as a lockout answered 429 at once with
//! `Retry-After`. A login that succeeds forgets the address's failures.
//!
//! An address is an IPv4 address or an IPv6 /64 (one host can hold a whole /64). The table is
//! bounded: entries idle longer than [`LoginPolicy::forget_after`] count as clean and are dropped
//! when it fills; past [`LoginPolicy::max_clients`] the oldest entry makes room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How failed logins are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPolicy {
    /// Failures answered at once (typos).
    pub free_failures: u32,
    /// The wait after the first failure beyond the free ones; doubled by each further failure.
    pub first_delay: Duration,
    /// The longest wait answered as a delayed 401; a longer one is a lockout (429).
    pub max_delay: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// How long an address's failures are remembered after its last one.
    pub forget_after: Duration,
    /// How many addresses are remembered at once.
    pub max_clients: usize,
}

impl Default for LoginPolicy {
    /// 5 free failures, then 1, 2, 4, 8 s delays, then lockouts of 16 s doubling up to 15 min;
    /// failures forgotten an hour after the last one; at most 10 000 addresses (under 1 MB).
    fn default() -> Self {
        LoginPolicy {
            free_failures: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_lockout: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
            max_clients: 10_000,
        }
    }
}

/// What to do with a failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Penalty {
    /// Answer 401 at once.
    None,
    /// Answer 401 after this wait.
    Delay(Duration),
    /// Answer 429: locked out for this long.
    Lockout(Duration),
}

/// One address's record.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    /// No login is checked from this address before this instant.
    blocked_until: Instant,
}

/// The per-address failure table.
#[derive(Debug)]
pub struct LoginThrottle {
    policy: LoginPolicy,
    records: Mutex<HashMap<IpAddr, Record>>,
}

/// The table's key for `ip`: IPv4 (also when mapped into IPv6) or the IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl LoginThrottle {
    pub fn new(policy: LoginPolicy) -> Self {
        LoginThrottle {
            policy,
            records: Mutex::default(),
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `ip` must still wait before a login is checked, if it must.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let records = self.records();
        let record = records.get(&client_key(ip))?;
        let left = record.blocked_until.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// A login from `ip` succeeded: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        self.records().remove(&client_key(ip));
    }

    /// A login from `ip` failed at `now`: counts it and says how to answer.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Penalty {
        let key = client_key(ip);
        let mut records = self.records();
        if !records.contains_key(&key) && records.len() >= self.policy.max_clients {
            self.make_room(&mut records, now);
        }
        let fresh = Record {
            failures: 0,
            last_failure: now,
            blocked_until: now,
        };
        let record = records.entry(key).or_insert(fresh);
        if now.saturating_duration_since(record.last_failure) > self.policy.forget_after {
            *record = fresh;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        let penalty = self.penalty(record.failures);
        if let Penalty::Delay(wait) | Penalty::Lockout(wait) = penalty {
            record.blocked_until = now + wait;
        }
        penalty
    }

    /// The answer to failure number `failures` (1-based).
    fn penalty(&self, failures: u32) -> Penalty {
        let Some(beyond) = failures.checked_sub(self.policy.free_failures.saturating_add(1)) else {
            return Penalty::None;
        };
        let wait = self
            .policy
            .first_delay
            .saturating_mul(2u32.saturating_pow(beyond))
            .min(self.policy.max_lockout);
        if wait <= self.policy.max_delay {
            Penalty::Delay(wait)
        } else {
            Penalty::Lockout(wait)
        }
    }

    /// Drops the forgotten entries; if none was, the one whose last failure is oldest.
    fn make_room(&self, records: &mut HashMap<IpAddr, Record>, now: Instant) {
        let forget_after = self.policy.forget_after;
        records.retain(|_, r| {
            now.saturating_duration_since(r.last_failure) <= forget_after || r.blocked_until > now
        });
        if records.len() < self.policy.max_clients {
            return;
        }
        let oldest = records
            .iter()
            .min_by_key(|(_, r)| r.last_failure)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            records.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LoginPolicy {
        LoginPolicy {
            free_failures: 2,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(2),
            max_lockout: Duration::from_secs(8),
            forget_after: Duration::from_secs(100),
            max_clients: 3,
        }
    }

    #[test]
    fn failures_grow_into_a_lockout_and_success_forgets_them() {
        let throttle = LoginThrottle::new(policy());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        let secs = Duration::from_secs;
        let answers: Vec<Penalty> = (0..7).map(|_| throttle.failed(ip, now)).collect();
        assert_eq!(
            answers,
            [
                Penalty::None,
                Penalty::None,
                Penalty::Delay(secs(1)),
                Penalty::Delay(secs(2)),
                Penalty::Lockout(secs(4)),
                Penalty::Lockout(secs(8)),
                Penalty::Lockout(secs(8)),
            ]
        );
        assert_eq!(throttle.blocked(ip, now), Some(secs(8)));
        assert_eq!(throttle.blocked(ip, now + secs(8)), None);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(throttle.blocked(other, now), None);
        throttle.succeeded(ip);
        assert_eq!(throttle.blocked(ip, now), None);
        assert_eq!(throttle.failed(ip, now), Penalty::None);
        // Failures are forgotten after `forget_after`.
        for _ in 0..3 {
            throttle.failed(other, now);
        }
        assert_eq!(throttle.failed(other, now + secs(101)), Penalty::None);
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_and_the_table_is_bounded() {
        let throttle = LoginThrottle::new(policy());
        let now = Instant::now();
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"] {
            throttle.failed(host.parse().unwrap(), now);
        }
        assert!(throttle
            .blocked("2001:db8::9".parse().unwrap(), now)
            .is_some());
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
        for (i, host) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            throttle.failed(
                host.parse().unwrap(),
                now + Duration::from_secs(i as u64 + 1),
            );
        }
        assert_eq!(throttle.records().len(), 3);
        assert!(!throttle
            .records()
            .contains_key(&client_key("2001:db8::1".parse().unwrap())));
    }
}
