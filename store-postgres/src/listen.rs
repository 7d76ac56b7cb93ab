//! Live wake-ups: NOTIFY after commit as a hint, LISTEN to hear other processes, polling as
//! the truth.
//!
//! Appends do not NOTIFY inside their own transaction: Postgres serializes the commits of
//! notifying transactions on one lock, which would stop concurrent appends from sharing a
//! WAL flush. Instead a background task sends one coalesced NOTIFY after appends commit,
//! and waiters in the same process are woken directly.

use std::{
    sync::{Arc, OnceLock, Weak},
    time::{Duration, Instant},
};

use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

/// Shortest gap between two NOTIFYs from one store (cross-process wake-up latency bound).
const NOTIFY_INTERVAL: Duration = Duration::from_millis(5);

/// How often background tasks check that their store still exists.
const ALIVE_CHECK: Duration = Duration::from_secs(5);

/// Wake-ups for one store: a counter that moves on every append seen (here or, through
/// LISTEN, in another process).
#[derive(Debug)]
pub(crate) struct Wakeups {
    pool: PgPool,
    channel: String,
    counter: Arc<watch::Sender<u64>>,
    listener: OnceLock<()>,
    notifier: OnceLock<Arc<Notify>>,
}

impl Wakeups {
    pub(crate) fn new(pool: PgPool, channel: String) -> Self {
        Self {
            pool,
            channel,
            counter: Arc::new(watch::channel(0).0),
            listener: OnceLock::new(),
            notifier: OnceLock::new(),
        }
    }

    /// The NOTIFY channel of this store.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// A receiver that sees every wake-up after this call. Call inside a tokio runtime (the
    /// first call starts the LISTEN task).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.listener.get_or_init(|| {
            tokio::spawn(listen(
                self.pool.clone(),
                self.channel.clone(),
                Arc::downgrade(&self.counter),
            ));
        });
        self.counter.subscribe()
    }

    /// An append committed: wake local waiters now and, if `notify`, other processes soon.
    pub(crate) fn appended(&self, notify: bool) {
        self.counter.send_modify(|n| *n += 1);
        if notify {
            self.notifier
                .get_or_init(|| {
                    let wake = Arc::new(Notify::new());
                    tokio::spawn(notifier(
                        self.pool.clone(),
                        self.channel.clone(),
                        Arc::downgrade(&wake),
                    ));
                    wake
                })
                .notify_one();
        }
    }
}

/// Waits for a wake-up or `nap`, whichever comes first.
pub(crate) async fn nap(rx: &mut watch::Receiver<u64>, nap: Duration) -> bool {
    let started = Instant::now();
    match tokio::time::timeout(nap, rx.changed()).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => {
            tokio::time::sleep(nap.saturating_sub(started.elapsed())).await;
            false
        }
        Err(_) => false,
    }
}

/// Sends at most one NOTIFY per [`NOTIFY_INTERVAL`] while appends happen, outside any
/// append's transaction.
async fn notifier(pool: PgPool, channel: String, wake: Weak<Notify>) {
    loop {
        let Some(notify) = wake.upgrade() else { return };
        let woke = tokio::time::timeout(ALIVE_CHECK, notify.notified())
            .await
            .is_ok();
        drop(notify);
        if woke {
            if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
                .bind(&channel)
                .execute(&pool)
                .await
            {
                debug!(%error, channel, "NOTIFY failed; listeners will poll");
            }
            // At most one NOTIFY per interval: appends during it leave one permit behind,
            // so the burst still gets its wake-up, after at most this much latency.
            tokio::time::sleep(NOTIFY_INTERVAL).await;
        }
    }
}

/// Bumps the counter on every notification; each (re)connection counts as one too, since
/// notifications sent while disconnected are lost. Ends when the store is dropped.
async fn listen(pool: PgPool, channel: String, counter: Weak<watch::Sender<u64>>) {
    let bump = |counter: &Weak<watch::Sender<u64>>| match counter.upgrade() {
        Some(counter) => {
            counter.send_modify(|n| *n += 1);
            true
        }
        None => false,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(error) => {
                warn!(%error, channel, "cannot LISTEN; live readers fall back to polling");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                if counter.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        debug!(channel, "listening for appends");
        backoff = Duration::from_millis(100);
        if !bump(&counter) {
            return;
        }
        loop {
            match tokio::time::timeout(ALIVE_CHECK, listener.try_recv()).await {
                Err(_) if counter.strong_count() == 0 => return,
                Err(_) => {}
                Ok(Ok(_)) => {
                    // Some(notification), or None: connection lost, try_recv reconnects.
                    if !bump(&counter) {
                        return;
                    }
                }
                Ok(Err(error)) => {
                    warn!(%error, channel, "LISTEN connection failed");
                    break;
                }
            }
        }
    }
}
