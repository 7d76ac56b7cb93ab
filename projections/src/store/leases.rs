use std::future::Future;

use crate::Result;

/// One active worker per subscription across processes: a worker runs only while it holds
/// the subscription's lease, and a standby takes over when the holder dies.
pub trait Leases: Clone + Send + Sync + 'static {
    /// Proof of being the one active worker of a subscription; dropping it releases it.
    type Lease: Send + Sync;

    /// Tries to become `name`'s one active worker; `None` when another holds it.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn try_lease(&self, name: &str) -> impl Future<Output = Result<Option<Self::Lease>>> + Send;

    /// Gives a lease up now (dropping it also releases it, eventually).
    fn release(&self, lease: Self::Lease) -> impl Future<Output = ()> + Send {
        async move { drop(lease) }
    }

    /// Whether a held lease is still valid (its connection is alive).
    fn lease_alive(&self, lease: &mut Self::Lease) -> impl Future<Output = bool> + Send;

    /// Whether some worker, in any process, holds `name`'s lease now.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn lease_held(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;
}
