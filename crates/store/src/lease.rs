//! The active coordinator's lease on a shared PostgreSQL database.
//!
//! Several coordinators may run on one database; one is active, the others stand by. The
//! active one holds the lease: the one row of `runegrid_lease`, naming its holder (an id each
//! coordinator process makes for itself), the URL it serves at (so a standby can tell clients
//! where to go), an epoch that grows with every takeover, and a deadline. The holder renews
//! the deadline well before it passes; a standby takes the lease over only once the deadline
//! has passed, raising the epoch. Times are the database server's (`clock_timestamp()`), so
//! the coordinators' clocks never meet.
//!
//! Renewing is not what keeps two coordinators from writing at once: the [`Fence`] is. Every
//! write transaction of the active coordinator first checks, under a share lock on the lease
//! row, that its holder and epoch are still the lease's — so a coordinator that was paused or
//! cut off past its deadline fails its next write instead of overwriting its successor's, and a
//! takeover waits for the transactions in flight to end (the successor then recovers from a
//! database that holds everything its predecessor committed).

use crate::postgres::{Fence, PostgresStore};
use crate::{Result, StoreError};
use std::time::Duration;

/// A coordinator's handle on the lease (its own connection).
pub struct Lease {
    db: PostgresStore,
    holder: String,
    advertise: String,
    ttl: Duration,
    epoch: Option<i64>,
}

/// Who holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    /// The URL the holder serves at.
    pub advertise: String,
    pub epoch: i64,
    /// Milliseconds until its deadline (negative once passed: a standby may take over).
    pub remaining_ms: i64,
}

impl Lease {
    /// Connects to the database (bringing its schema up to date) as `holder`, which should be
    /// unique to this process, serving at `advertise`; a held lease lasts `ttl` past each
    /// renewal.
    pub fn open(url: &str, holder: &str, advertise: &str, ttl: Duration) -> Result<Lease> {
        Ok(Lease {
            db: PostgresStore::open(url)?,
            holder: holder.into(),
            advertise: advertise.into(),
            ttl,
            epoch: None,
        })
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease if nobody holds it or its holder's deadline has passed; the fence to
    /// write under when it was taken, `None` when another coordinator holds it.
    pub fn try_acquire(&mut self) -> Result<Option<Fence>> {
        let rows = self.db.query(
            "INSERT INTO runegrid_lease (id, holder, advertise, epoch, deadline)
             VALUES (1, $1, $2, 1, clock_timestamp() + make_interval(secs => $3))
             ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder,
                 advertise = EXCLUDED.advertise, epoch = runegrid_lease.epoch + 1,
                 deadline = EXCLUDED.deadline
             WHERE runegrid_lease.deadline < clock_timestamp()
             RETURNING epoch",
            &[&self.holder, &self.advertise, &self.ttl.as_secs_f64()],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let epoch: i64 = row.try_get(0)?;
        self.epoch = Some(epoch);
        Ok(Some(Fence {
            holder: self.holder.clone(),
            epoch,
        }))
    }

    /// Pushes the deadline `ttl` past now; `false` when the lease is no longer this
    /// coordinator's (or never was).
    pub fn renew(&mut self) -> Result<bool> {
        let Some(epoch) = self.epoch else {
            return Ok(false);
        };
        let rows = self.db.query(
            "UPDATE runegrid_lease SET deadline = clock_timestamp() + make_interval(secs => $3)
             WHERE id = 1 AND holder = $1 AND epoch = $2 RETURNING epoch",
            &[&self.holder, &epoch, &self.ttl.as_secs_f64()],
        )?;
        if rows.is_empty() {
            self.epoch = None;
        }
        Ok(!rows.is_empty())
    }

    /// Gives the lease up (its deadline set in the past), so a standby takes over at once
    /// rather than when the deadline would have passed.
    pub fn release(&mut self) -> Result<()> {
        if let Some(epoch) = self.epoch.take() {
            self.db.query(
                "UPDATE runegrid_lease SET deadline = clock_timestamp() - interval '1 second'
                 WHERE id = 1 AND holder = $1 AND epoch = $2",
                &[&self.holder, &epoch],
            )?;
        }
        Ok(())
    }

    /// Who holds the lease now (`None`: nobody ever has).
    pub fn current(&mut self) -> Result<Option<LeaseHolder>> {
        let rows = self.db.query(
            "SELECT holder, advertise, epoch,
                    (EXTRACT(EPOCH FROM deadline - clock_timestamp()) * 1000)::BIGINT
             FROM runegrid_lease WHERE id = 1",
            &[],
        )?;
        rows.first()
            .map(|r| {
                Ok::<_, StoreError>(LeaseHolder {
                    holder: r.try_get(0)?,
                    advertise: r.try_get(1)?,
                    epoch: r.try_get(2)?,
                    remaining_ms: r.try_get(3)?,
                })
            })
            .transpose()
    }
}
