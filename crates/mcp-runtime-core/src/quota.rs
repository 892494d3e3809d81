//! Quotas: what one subject (the AuthContext's email) may hold of what all subjects share, and
//! the process's budget of bytes in flight.
//!
//! Three things are counted per subject: open streams (standalone GET streams and MCP
//! 2026-07-28 `subscriptions/listen` streams, `crate::listen`), upstream calls in flight,
//! and bytes in flight (request bodies while their request is handled, results while they are
//! written to the caller). Bytes are also counted for the whole process. A [`Permit`] holds
//! what it counts and gives it back when dropped, so every path that ends a request (its
//! answer, an error, the caller going away, cancellation, shutdown) releases it; nothing is
//! released by hand.
//!
//! A refusal is a [`RequestError`]: a subject at one of its quotas gets
//! [`RequestError::SubjectQuota`] (HTTP 429), a process out of budget
//! [`RequestError::ProcessBusy`] (HTTP 503); both carry `Retry-After` unless the request alone
//! is larger than the budget (waiting would not help). Sessions per subject are counted by the
//! session table itself (`session`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::error::RequestError;

/// Default of [`QuotaConfig::max_streams_per_subject`].
pub const DEFAULT_MAX_STREAMS_PER_SUBJECT: usize = 64;
/// Default of [`QuotaConfig::max_calls_per_subject`].
pub const DEFAULT_MAX_CALLS_PER_SUBJECT: usize = 256;
/// Default of [`QuotaConfig::max_bytes_per_subject`]: 128 MiB, two results at the default
/// message limit.
pub const DEFAULT_MAX_BYTES_PER_SUBJECT: usize = 128 * 1024 * 1024;
/// Default of [`QuotaConfig::max_bytes_in_flight`]: 512 MiB.
pub const DEFAULT_MAX_BYTES_IN_FLIGHT: usize = 512 * 1024 * 1024;

/// The quotas; each is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaConfig {
    /// Standalone GET (SSE) streams one subject may hold open at once.
    pub max_streams_per_subject: usize,
    /// Upstream calls (`tools/call`, `prompts/get`, `resources/read`) one subject may have in
    /// flight at once.
    pub max_calls_per_subject: usize,
    /// Bytes of request bodies and results one subject may have in flight at once.
    pub max_bytes_per_subject: usize,
    /// Bytes of request bodies and results the process may have in flight at once.
    pub max_bytes_in_flight: usize,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            max_streams_per_subject: DEFAULT_MAX_STREAMS_PER_SUBJECT,
            max_calls_per_subject: DEFAULT_MAX_CALLS_PER_SUBJECT,
            max_bytes_per_subject: DEFAULT_MAX_BYTES_PER_SUBJECT,
            max_bytes_in_flight: DEFAULT_MAX_BYTES_IN_FLIGHT,
        }
    }
}

/// What a subject holds of a shared resource; the name of a quota in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Open standalone GET streams and `subscriptions/listen` streams.
    Streams,
    /// Upstream calls in flight.
    Calls,
    /// Bytes in flight.
    Bytes,
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Streams => "open streams",
            Self::Calls => "calls in flight",
            Self::Bytes => "bytes in flight",
        })
    }
}

/// What one subject holds.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    streams: usize,
    calls: usize,
    bytes: usize,
}

impl Held {
    fn is_empty(self) -> bool {
        self.streams == 0 && self.calls == 0 && self.bytes == 0
    }
}

/// What is held, per subject and in total, under one lock (never held across an await).
#[derive(Debug, Default)]
struct Ledger {
    per_subject: HashMap<String, Held>,
    bytes: usize,
}

/// The quotas of a runtime and what is held against them.
#[derive(Debug)]
pub(crate) struct Quotas {
    config: QuotaConfig,
    ledger: Mutex<Ledger>,
}

/// One grant: `amount` of `quota` held by `subject` until dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    quotas: Arc<Quotas>,
    subject: String,
    quota: Quota,
    amount: usize,
}

impl Quotas {
    pub(crate) fn new(config: QuotaConfig) -> Self {
        Self {
            config: QuotaConfig {
                max_streams_per_subject: config.max_streams_per_subject.max(1),
                max_calls_per_subject: config.max_calls_per_subject.max(1),
                max_bytes_per_subject: config.max_bytes_per_subject.max(1),
                max_bytes_in_flight: config.max_bytes_in_flight.max(1),
            },
            ledger: Mutex::default(),
        }
    }

    /// Grants one stream or one call (`amount` is 1) or `amount` bytes to `subject`.
    ///
    /// # Errors
    ///
    /// [`RequestError::SubjectQuota`] when the subject would hold more than its quota,
    /// [`RequestError::ProcessBusy`] when bytes would exceed the process's budget. Nothing is
    /// granted then.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        subject: &str,
        quota: Quota,
        amount: usize,
    ) -> Result<Permit, RequestError> {
        self.take(subject, quota, amount, amount)?;
        Ok(Permit {
            quotas: Arc::clone(self),
            subject: subject.to_owned(),
            quota,
            amount,
        })
    }

    /// Counts `amount` more of `quota` for `subject`; `total` is what the grant holds with it
    /// (whether it alone exceeds a limit).
    fn take(
        &self,
        subject: &str,
        quota: Quota,
        amount: usize,
        total: usize,
    ) -> Result<(), RequestError> {
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        let held = ledger.per_subject.get(subject).copied().unwrap_or_default();
        let (now, limit) = match quota {
            Quota::Streams => (held.streams, self.config.max_streams_per_subject),
            Quota::Calls => (held.calls, self.config.max_calls_per_subject),
            Quota::Bytes => (held.bytes, self.config.max_bytes_per_subject),
        };
        if now.saturating_add(amount) > limit {
            return Err(RequestError::SubjectQuota {
                quota,
                limit,
                alone: total > limit,
            });
        }
        if quota == Quota::Bytes {
            let budget = self.config.max_bytes_in_flight;
            if ledger.bytes.saturating_add(amount) > budget {
                return Err(RequestError::ProcessBusy {
                    budget,
                    alone: total > budget,
                });
            }
            ledger.bytes += amount;
        }
        let entry = ledger.per_subject.entry(subject.to_owned()).or_default();
        match quota {
            Quota::Streams => entry.streams += amount,
            Quota::Calls => entry.calls += amount,
            Quota::Bytes => entry.bytes += amount,
        }
        Ok(())
    }

    /// Bytes in flight in the whole process.
    pub(crate) fn bytes_in_flight(&self) -> usize {
        self.ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    fn release(&self, subject: &str, quota: Quota, amount: usize) {
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        if quota == Quota::Bytes {
            ledger.bytes -= amount;
        }
        if let Some(held) = ledger.per_subject.get_mut(subject) {
            match quota {
                Quota::Streams => held.streams -= amount,
                Quota::Calls => held.calls -= amount,
                Quota::Bytes => held.bytes -= amount,
            }
            if held.is_empty() {
                ledger.per_subject.remove(subject);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.quotas.release(&self.subject, self.quota, self.amount);
    }
}

/// Bytes held for a request body: taken by an adapter from the declared length before it reads
/// the body (so a body the subject or the process has no room for is refused unread) and handed
/// to [`crate::Runtime::handle_reserved`], which keeps it until the request is answered.
/// Released when dropped.
#[derive(Debug)]
pub struct BodyReservation {
    permit: Permit,
}

impl BodyReservation {
    /// Whether it holds at least `bytes`.
    pub(crate) fn covers(&self, bytes: usize) -> bool {
        self.permit.amount >= bytes
    }
}

impl Quotas {
    pub(crate) fn reserve_body(
        self: &Arc<Self>,
        subject: &str,
        bytes: usize,
    ) -> Result<BodyReservation, RequestError> {
        Ok(BodyReservation {
            permit: self.acquire(subject, Quota::Bytes, bytes)?,
        })
    }
}

/// A body whose bytes stay counted until the last [`Bytes`] handle to it is dropped (the
/// adapter has written it, or the caller went away).
struct Counted {
    body: Bytes,
    _permit: Permit,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Permit {
    /// `body` as [`Bytes`] that hold this permit: no copy, released with the bytes.
    pub(crate) fn hold_in(self, body: impl Into<Bytes>) -> Bytes {
        Bytes::from_owner(Counted {
            body: body.into(),
            _permit: self,
        })
    }

    /// What the permit holds now.
    #[cfg(test)]
    pub(crate) fn amount(&self) -> usize {
        self.amount
    }

    /// Holds `amount` instead: more is checked against the subject's quota and the process's
    /// budget as [`Quotas::acquire`] checks it (nothing changes when refused; `alone` is judged
    /// on the whole `amount`), less gives the difference back.
    ///
    /// # Errors
    ///
    /// [`RequestError::SubjectQuota`] or [`RequestError::ProcessBusy`] when growing past a
    /// limit.
    pub(crate) fn resize(&mut self, amount: usize) -> Result<(), RequestError> {
        if amount > self.amount {
            self.quotas
                .take(&self.subject, self.quota, amount - self.amount, amount)?;
        } else if amount < self.amount {
            self.quotas
                .release(&self.subject, self.quota, self.amount - amount);
        }
        self.amount = amount;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(streams: usize, calls: usize, bytes: usize, process: usize) -> Arc<Quotas> {
        Arc::new(Quotas::new(QuotaConfig {
            max_streams_per_subject: streams,
            max_calls_per_subject: calls,
            max_bytes_per_subject: bytes,
            max_bytes_in_flight: process,
        }))
    }

    #[test]
    fn a_subject_at_its_quota_is_refused_and_others_are_not() {
        let q = quotas(2, 1, 100, 1000);
        let a = q.acquire("a", Quota::Streams, 1).unwrap();
        let _b = q.acquire("a", Quota::Streams, 1).unwrap();
        let refused = q.acquire("a", Quota::Streams, 1).unwrap_err();
        assert!(matches!(
            refused,
            RequestError::SubjectQuota {
                quota: Quota::Streams,
                limit: 2,
                alone: false
            }
        ));
        assert_eq!((refused.status(), refused.retry_after_s()), (429, Some(1)));
        let _other = q.acquire("b", Quota::Streams, 1).unwrap();
        drop(a);
        let _again = q.acquire("a", Quota::Streams, 1).unwrap();
        let _call = q.acquire("a", Quota::Calls, 1).unwrap();
        assert!(q.acquire("a", Quota::Calls, 1).is_err());
    }

    #[test]
    fn bytes_count_per_subject_and_for_the_process() {
        let q = quotas(1, 1, 100, 150);
        let a = q.acquire("a", Quota::Bytes, 80).unwrap();
        let e = q.acquire("a", Quota::Bytes, 30).unwrap_err();
        assert!(matches!(e, RequestError::SubjectQuota { alone: false, .. }));
        let b = q.acquire("b", Quota::Bytes, 60).unwrap();
        let e = q.acquire("c", Quota::Bytes, 20).unwrap_err();
        assert_eq!((e.status(), e.retry_after_s()), (503, Some(1)));
        assert_eq!(q.bytes_in_flight(), 140);
        drop((a, b));
        assert_eq!(q.bytes_in_flight(), 0);
        assert!(
            q.ledger.lock().unwrap().per_subject.is_empty(),
            "no entry left behind"
        );
        // Larger than the quota alone: refused without Retry-After.
        let e = q.acquire("a", Quota::Bytes, 101).unwrap_err();
        assert!(matches!(e, RequestError::SubjectQuota { alone: true, .. }));
        assert_eq!(e.retry_after_s(), None);
    }

    #[test]
    fn a_permit_grows_within_the_limits_and_shrinks() {
        let q = quotas(1, 1, 100, 150);
        let mut a = q.acquire("a", Quota::Bytes, 40).unwrap();
        a.resize(90).unwrap();
        assert_eq!((a.amount(), q.bytes_in_flight()), (90, 90));
        // Past the subject's quota: refused, nothing changed; alone judged on the whole amount.
        let e = a.resize(101).unwrap_err();
        assert!(matches!(e, RequestError::SubjectQuota { alone: true, .. }));
        assert_eq!((a.amount(), q.bytes_in_flight()), (90, 90));
        // Past the process's budget (another subject holds 60): 503, with Retry-After.
        let b = q.acquire("b", Quota::Bytes, 60).unwrap();
        a.resize(80).unwrap();
        assert_eq!(q.bytes_in_flight(), 140);
        let e = a.resize(100).unwrap_err();
        assert!(matches!(e, RequestError::ProcessBusy { alone: false, .. }));
        assert_eq!((e.status(), e.retry_after_s()), (503, Some(1)));
        assert_eq!(q.bytes_in_flight(), 140);
        a.resize(10).unwrap();
        assert_eq!(q.bytes_in_flight(), 70);
        drop((a, b));
        assert_eq!(q.bytes_in_flight(), 0);
        assert!(q.ledger.lock().unwrap().per_subject.is_empty());
        // A held body keeps what the permit was resized to.
        let mut p = q.acquire("a", Quota::Bytes, 1).unwrap();
        p.resize(5).unwrap();
        let body = p.hold_in(b"hello".to_vec());
        assert_eq!(q.bytes_in_flight(), 5);
        drop(body);
        assert_eq!(q.bytes_in_flight(), 0);
    }

    #[test]
    fn held_bytes_are_released_with_the_last_handle() {
        let q = quotas(1, 1, 100, 100);
        let body = q
            .acquire("a", Quota::Bytes, 5)
            .unwrap()
            .hold_in(b"hello".to_vec());
        let part = body.slice(1..3);
        drop(body);
        assert_eq!(q.bytes_in_flight(), 5, "a slice still holds the body");
        assert_eq!(&part[..], b"el");
        drop(part);
        assert_eq!(q.bytes_in_flight(), 0);
    }
}
