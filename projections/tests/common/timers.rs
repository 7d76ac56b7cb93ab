//! Process managers' durable timers, on both backends: never claimed before they are due,
//! claimed by one worker at a time (workers claiming at once split them), fired again
//! after a claim lapses (a worker that died), and a replayed older decision neither moves
//! nor revives a timer.

use std::{collections::BTreeSet, time::Duration};

use annals_projections::{ProcessStore, Timer};
use chrono::Utc;

fn timer(instance: usize, due_in: chrono::Duration, version: u64) -> Timer {
    Timer {
        process: "p".into(),
        instance: format!("i{instance}"),
        name: "timeout".into(),
        due_at: Some(Utc::now() + due_in),
        version,
    }
}

pub async fn timers_fire_once_due_and_never_early<T: ProcessStore>(store: T) {
    for i in 0..100 {
        store
            .put_timer(&timer(i, chrono::Duration::seconds(-1), 1))
            .await
            .expect("put");
    }
    store
        .put_timer(&timer(999, chrono::Duration::hours(1), 1))
        .await
        .expect("put");
    // Four workers claim at once: between them each due timer once, the future one never.
    let claims = futures_claim(&store, 4).await;
    let all: BTreeSet<String> = claims
        .iter()
        .flatten()
        .map(|t| t.instance.clone())
        .collect();
    assert_eq!(all.len(), 100, "a due timer was not claimed");
    assert_eq!(
        claims.iter().map(Vec::len).sum::<usize>(),
        100,
        "a timer was claimed by two workers"
    );
    assert!(!all.contains("i999"), "a timer fired before its time");
    // Claimed: hidden until the claim lapses.
    let again = store
        .claim_due_timers("p", Utc::now(), Duration::from_millis(200), 1000)
        .await
        .expect("claim");
    assert!(
        again.is_empty(),
        "claimed timers were claimed again: {again:?}"
    );
    // Fired ones are done; one whose worker died comes back after the claim.
    for t in claims.iter().flatten().filter(|t| t.instance != "i0") {
        store.timer_fired(t).await.expect("fired");
    }
    let later = Utc::now() + chrono::Duration::seconds(31);
    let lapsed = store
        .claim_due_timers("p", later, Duration::from_secs(30), 1000)
        .await
        .expect("claim");
    assert_eq!(
        lapsed
            .iter()
            .map(|t| t.instance.as_str())
            .collect::<Vec<_>>(),
        ["i0"],
        "only the unfired timer comes back"
    );

    // Versions: a cancel at version 3, then a replay of the set at version 2.
    let mut set = timer(7, chrono::Duration::seconds(-1), 2);
    set.instance = "v".into();
    store.put_timer(&set).await.expect("set");
    store
        .put_timer(&Timer {
            due_at: None,
            version: 3,
            ..set.clone()
        })
        .await
        .expect("cancel");
    store.put_timer(&set).await.expect("replayed set");
    let revived = store
        .claim_due_timers("p", later, Duration::from_secs(30), 1000)
        .await
        .expect("claim");
    assert!(
        revived.iter().all(|t| t.instance != "v"),
        "a replayed decision revived a cancelled timer"
    );
    let (_, pending) = store.process_counts("p").await.expect("counts");
    assert_eq!(pending, 2, "i0 (claimed again) and i999 are pending");
}

async fn futures_claim<T: ProcessStore>(store: &T, workers: usize) -> Vec<Vec<Timer>> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_due_timers("p", Utc::now(), Duration::from_secs(30), 7)
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(claimed) = tasks.join_next().await {
        all.push(claimed.expect("worker"));
    }
    all
}
