//! Leases: a session advisory lock on a connection of its own, released by the server the
//! moment that connection dies.

use sqlx::{Connection, PgConnection};

use super::{sqlx_err, PgCheckpoints};
use crate::{Leases, Result};

/// A subscription's lease: a session advisory lock on a connection of its own.
#[derive(Debug)]
pub struct PgLease {
    conn: PgConnection,
}

impl Leases for PgCheckpoints {
    type Lease = PgLease;

    async fn try_lease(&self, projection: &str) -> Result<Option<PgLease>> {
        // A connection of its own, outside the pool: the lock lives exactly as long as it.
        let mut conn = PgConnection::connect_with(&self.pool().connect_options())
            .await
            .map_err(sqlx_err)?;
        let held: bool = sqlx::query_scalar(include_str!("try_lease.sql"))
            .bind(self.store.schema())
            .bind(projection)
            .fetch_one(&mut conn)
            .await
            .map_err(sqlx_err)?;
        if held {
            Ok(Some(PgLease { conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    async fn release(&self, mut lease: PgLease) {
        // Unlock before closing, so the lease is free the moment this returns.
        let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut lease.conn)
            .await;
        let _ = lease.conn.close().await;
    }

    async fn lease_alive(&self, lease: &mut PgLease) -> bool {
        lease.conn.ping().await.is_ok()
    }

    async fn lease_held(&self, projection: &str) -> Result<bool> {
        sqlx::query_scalar(include_str!("lease_held.sql"))
            .bind(self.store.schema())
            .bind(projection)
            .fetch_one(self.pool())
            .await
            .map_err(sqlx_err)
    }
}
