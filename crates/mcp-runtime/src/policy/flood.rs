//! Flood protection of caller resolution (edge mode): one ResolveCaller call per credential and
//! scope at a time (single-flight), and caps on the calls in progress per client address and
//! in all.
//!
//! Without these, every request with an unknown or bad credential is a call to the core, and a
//! client sending many of them at once fills the core's queue until valid callers time out
//! (503). With them, requests that carry the same credential for the same virtual server while
//! a call for it is in progress wait for that call's answer ([`Flights`]); a new call needs a
//! slot ([`ResolveSlots`]): at most `per_client` from one IP address and `total` in all, beyond
//! which the request is answered 503 with `Retry-After` at once, the core not asked. Requests
//! answered from the caller or denial cache need neither.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use super::cache::CacheKey;
use super::{CoreUnavailable, ResolveAnswer};

/// The caps on ResolveCaller calls in progress (`--core-max-resolves-per-client`,
/// `--core-max-resolves`); each at least 1.
#[derive(Debug, Clone, Copy)]
pub struct ResolveLimits {
    /// Most calls in progress for requests from one client IP address.
    pub per_client: usize,
    /// Most calls in progress in all.
    pub total: usize,
}

/// A cap was reached: the request is answered 503 with `Retry-After`, the core not asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// `--core-max-resolves-per-client` calls of this client address are in progress.
    #[error("{limit} caller resolutions of this client are in progress")]
    Client {
        /// The cap.
        limit: usize,
    },
    /// `--core-max-resolves` calls are in progress.
    #[error("{limit} caller resolutions are in progress")]
    Total {
        /// The cap.
        limit: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// The slots of ResolveCaller calls in progress. One short lock per call taken or ended; an
/// address without calls in progress holds no memory.
#[derive(Debug)]
pub struct ResolveSlots {
    limits: ResolveLimits,
    counts: Mutex<Counts>,
}

/// One call's slot; dropping it ends the call's claim.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ResolveSlots>,
    client: IpAddr,
}

impl ResolveSlots {
    /// Slots within `limits` (each raised to at least 1).
    #[must_use]
    pub fn new(limits: ResolveLimits) -> Self {
        Self {
            limits: ResolveLimits {
                per_client: limits.per_client.max(1),
                total: limits.total.max(1),
            },
            counts: Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a call on behalf of `client`, or which cap is reached (the per-client one is
    /// checked first).
    ///
    /// # Errors
    ///
    /// [`Busy`] at either cap.
    pub fn try_acquire(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Busy> {
        let mut c = self.counts();
        let mine = c.per_client.get(&client).copied().unwrap_or(0);
        if mine >= self.limits.per_client {
            return Err(Busy::Client {
                limit: self.limits.per_client,
            });
        }
        if c.total >= self.limits.total {
            return Err(Busy::Total {
                limit: self.limits.total,
            });
        }
        c.total += 1;
        c.per_client.insert(client, mine + 1);
        Ok(Slot {
            slots: Arc::clone(self),
            client,
        })
    }

    /// Calls in progress: in all, and of `client`.
    #[must_use]
    pub fn in_progress(&self, client: IpAddr) -> (usize, usize) {
        let c = self.counts();
        (c.total, c.per_client.get(&client).copied().unwrap_or(0))
    }

    /// How many client addresses have calls in progress.
    #[must_use]
    pub fn clients(&self) -> usize {
        self.counts().per_client.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                c.per_client.remove(&self.client);
            }
        }
    }
}

/// What one flight is keyed by: the credential's cache key and the virtual server id.
pub(crate) type FlightKey = (CacheKey, String);

/// One ResolveCaller call in progress, awaited by every request that joined it.
pub(crate) type Flight = Shared<BoxFuture<'static, Result<ResolveAnswer, CoreUnavailable>>>;

/// The ResolveCaller calls in progress, by credential and scope (single-flight).
#[derive(Debug, Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<FlightKey, Flight>>,
}

impl Flights {
    fn map(&self) -> MutexGuard<'_, HashMap<FlightKey, Flight>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The call in progress for `key`, or a new one: `start` is asked for a slot and the call,
    /// which runs in a task of its own (to its end even when every request waiting for it went
    /// away, so its slot is always given back) and leaves the table when it ends.
    ///
    /// # Errors
    ///
    /// [`Busy`] when no call is in progress for `key` and `start` finds no slot.
    pub(crate) fn join_or_start<F>(
        self: &Arc<Self>,
        key: FlightKey,
        start: impl FnOnce() -> Result<(Slot, F), Busy>,
    ) -> Result<Flight, Busy>
    where
        F: Future<Output = Result<ResolveAnswer, CoreUnavailable>> + Send + 'static,
    {
        let mut map = self.map();
        if let Some(flight) = map.get(&key) {
            return Ok(flight.clone());
        }
        let (slot, call) = start()?;
        let this = Arc::clone(self);
        let owned = key.clone();
        let task = tokio::spawn(async move {
            let answer = call.await;
            this.map().remove(&owned);
            drop(slot);
            answer
        });
        let flight: Flight = async move {
            task.await.unwrap_or_else(|e| {
                Err(CoreUnavailable(format!(
                    "the ResolveCaller task ended: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        map.insert(key, flight.clone());
        Ok(flight)
    }

    /// Calls in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::super::Resolution;
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_per_client_cap_holds_one_address_and_the_total_cap_all() {
        let slots = Arc::new(ResolveSlots::new(ResolveLimits {
            per_client: 2,
            total: 3,
        }));
        let a1 = slots.try_acquire(ip(1)).unwrap();
        let _a2 = slots.try_acquire(ip(1)).unwrap();
        assert_eq!(
            slots.try_acquire(ip(1)).unwrap_err(),
            Busy::Client { limit: 2 }
        );
        // Another address still gets a slot...
        let _b1 = slots.try_acquire(ip(2)).unwrap();
        // ...until the total is reached.
        assert_eq!(
            slots.try_acquire(ip(3)).unwrap_err(),
            Busy::Total { limit: 3 }
        );
        assert_eq!(slots.in_progress(ip(1)), (3, 2));
        drop(a1);
        assert_eq!(slots.in_progress(ip(1)), (2, 1));
        let _c1 = slots.try_acquire(ip(3)).unwrap();
        assert_eq!(slots.clients(), 3);
    }

    #[test]
    fn an_address_without_calls_holds_no_memory() {
        let slots = Arc::new(ResolveSlots::new(ResolveLimits {
            per_client: 8,
            total: 64,
        }));
        for i in 0..=255u8 {
            drop(slots.try_acquire(ip(i)).unwrap());
        }
        assert_eq!(slots.clients(), 0);
        assert_eq!(slots.in_progress(ip(1)), (0, 0));
        // Zero caps are raised to one.
        let one = Arc::new(ResolveSlots::new(ResolveLimits {
            per_client: 0,
            total: 0,
        }));
        let _s = one.try_acquire(ip(1)).unwrap();
        assert!(one.try_acquire(ip(2)).is_err());
    }

    fn answer() -> ResolveAnswer {
        ResolveAnswer {
            resolution: Resolution::Denied(super::super::Denial {
                http_status: 401,
                www_authenticate: String::new(),
                reason: "Unauthorized: bad".into(),
            }),
            cache_max_age_ms: 0,
            generation: 1,
        }
    }

    #[tokio::test]
    async fn concurrent_requests_of_one_key_share_one_call() {
        let flights = Arc::new(Flights::default());
        let slots = Arc::new(ResolveSlots::new(ResolveLimits {
            per_client: 1,
            total: 1,
        }));
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let key: FlightKey = ([7; 32], String::new());
        let mut waiting = Vec::new();
        for _ in 0..50 {
            let calls = Arc::clone(&calls);
            let mut released = released.clone();
            let flight = flights
                .join_or_start(key.clone(), || {
                    let slot = slots.try_acquire(ip(1))?;
                    Ok((slot, async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        Ok(answer())
                    }))
                })
                .expect("the first starts the call, the others join it without a slot");
            waiting.push(tokio::spawn(flight));
        }
        assert_eq!(flights.len(), 1);
        // Another key from the same client finds the client's one slot taken.
        let other = flights.join_or_start(([8; 32], String::new()), || {
            let slot = slots.try_acquire(ip(1))?;
            Ok((slot, async { Ok(answer()) }))
        });
        assert_eq!(other.err(), Some(Busy::Client { limit: 1 }));
        release.send(true).unwrap();
        for w in waiting {
            assert!(matches!(
                w.await.unwrap().unwrap().resolution,
                Resolution::Denied(_)
            ));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "the call left the table");
        assert_eq!(slots.in_progress(ip(1)), (0, 0), "its slot was given back");
        // The same scope with another virtual server is another call.
        assert_ne!(key, ([7; 32], "echo-only".to_owned()));
    }

    #[tokio::test]
    async fn a_call_whose_requests_went_away_still_ends_and_frees_its_slot() {
        let flights = Arc::new(Flights::default());
        let slots = Arc::new(ResolveSlots::new(ResolveLimits {
            per_client: 1,
            total: 1,
        }));
        let flight = flights
            .join_or_start(([9; 32], String::new()), || {
                let slot = slots.try_acquire(ip(1))?;
                Ok((slot, async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(answer())
                }))
            })
            .unwrap();
        drop(flight);
        for _ in 0..200 {
            if flights.len() == 0 && slots.in_progress(ip(1)) == (0, 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the abandoned call kept its slot");
    }
}
