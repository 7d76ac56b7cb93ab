//! Live wake-ups: LISTEN on the store's channel as a hint, polling as the truth.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Lazily starts one listener task per store; waiters subscribe to its counter.
#[derive(Debug)]
pub(crate) struct Wakeups {
    pool: PgPool,
    channel: String,
    counter: OnceLock<watch::Receiver<u64>>,
}

impl Wakeups {
    pub(crate) fn new(pool: PgPool, channel: String) -> Self {
        Self {
            pool,
            channel,
            counter: OnceLock::new(),
        }
    }

    /// A receiver that sees every notification after this call. Must be called inside a
    /// tokio runtime (the first call spawns the listener).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self
            .counter
            .get_or_init(|| {
                let (tx, rx) = watch::channel(0);
                tokio::spawn(listen(self.pool.clone(), self.channel.clone(), tx));
                rx
            })
            .clone();
        rx.mark_unchanged();
        rx
    }
}

/// Waits for a notification or `nap`, whichever comes first.
pub(crate) async fn nap(rx: &mut watch::Receiver<u64>, nap: Duration) {
    let started = Instant::now();
    if let Ok(Err(_)) = tokio::time::timeout(nap, rx.changed()).await {
        // The listener is gone: fall back to plain polling.
        tokio::time::sleep(nap.saturating_sub(started.elapsed())).await;
    }
}

/// Runs until every receiver (every clone of the store) is dropped. Reconnects with a
/// back-off; each (re)connection counts as a wake-up, since notifications sent while
/// disconnected are lost.
async fn listen(pool: PgPool, channel: String, tx: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = tx.closed() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    warn!(%error, channel, "cannot LISTEN; live readers fall back to polling");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        debug!(channel, "listening for appends");
        backoff = Duration::from_millis(100);
        tx.send_modify(|n| *n += 1);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => tx.send_modify(|n| *n += 1),
                    Ok(None) => {
                        // Connection lost; try_recv reconnects on the next call.
                        tx.send_modify(|n| *n += 1);
                    }
                    Err(error) => {
                        warn!(%error, channel, "LISTEN connection failed");
                        break;
                    }
                },
            }
        }
    }
}
