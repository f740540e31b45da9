//! What a worker did: the [`WorkerReport`] it returns, and the [`Recorder`] every stage counts
//! outcomes through (also into metrics, when enabled).

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use taskq_core::{DeadReason, Envelope};

use crate::metrics::{self, Event};

/// What a worker did between start and shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Invocations that ended as FAILURE.
    pub failed: u64,
    /// Messages moved to dead letters (failures, malformed, unknown tasks).
    pub dead_lettered: u64,
    /// Invocations that ended as EXPIRED without running.
    pub expired: u64,
    /// Invocations that ended as REVOKED (skipped, or stopped while running).
    pub revoked: u64,
    /// Messages put back unfinished on shutdown.
    pub requeued: u64,
    /// Times the worker learned its lease was gone (it was presumed dead) and rejoined under a
    /// fresh identity.
    pub lease_losses: u64,
}

/// Counts outcomes for the report and, if enabled, in metrics.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    metrics: bool,
    succeeded: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    expired: AtomicU64,
    revoked: AtomicU64,
    requeued: AtomicU64,
    lease_losses: AtomicU64,
}

impl Recorder {
    /// A recorder that also writes metrics when `metrics` is set.
    pub(crate) fn new(metrics: bool) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    /// Counts one outcome of an execution.
    pub(crate) fn record(&self, event: Event, envelope: &Envelope) {
        let counter = match event {
            Event::Started => None,
            Event::Succeeded => Some(&self.succeeded),
            Event::Failed => Some(&self.failed),
            Event::Retried => Some(&self.retried),
            Event::Revoked => Some(&self.revoked),
            Event::Expired => Some(&self.expired),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if self.metrics {
            metrics::count(event, envelope);
        }
    }

    /// Counts a dead letter.
    pub(crate) fn dead_lettered(&self, queue: &str, reason: DeadReason) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if self.metrics {
            metrics::dead_lettered(queue, reason);
        }
    }

    /// Counts messages put back unfinished.
    pub(crate) fn requeued(&self, count: usize) {
        self.requeued.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Counts a lost lease.
    pub(crate) fn lease_lost(&self) {
        self.lease_losses.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts messages this worker's reaper recovered from lost workers.
    pub(crate) fn recovered(&self, count: usize) {
        if self.metrics {
            metrics::recovered(count);
        }
    }

    /// Records how long a message waited before it started.
    pub(crate) fn queue_wait(&self, envelope: &Envelope, now: DateTime<Utc>) {
        if self.metrics {
            metrics::queue_wait(envelope, now);
        }
    }

    /// Records how long an attempt ran.
    pub(crate) fn run_time(&self, envelope: &Envelope, took: std::time::Duration) {
        if self.metrics {
            metrics::run_time(envelope, took);
        }
    }

    /// Records how many executions are running.
    pub(crate) fn in_flight(&self, running: usize) {
        if self.metrics {
            metrics::in_flight(running);
        }
    }

    pub(crate) fn report(&self) -> WorkerReport {
        WorkerReport {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            revoked: self.revoked.load(Ordering::Relaxed),
            requeued: self.requeued.load(Ordering::Relaxed),
            lease_losses: self.lease_losses.load(Ordering::Relaxed),
        }
    }
}
