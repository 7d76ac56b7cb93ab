//! The embeddable operations CLI (feature `cli`): mount [`ProjectionCommand`] in your own
//! clap binary, register your projections on a [`ProjectionEngine`], and call [`execute`].
//!
//! ```no_run
//! use annals_projections::cli::{execute, ProjectionCommand};
//! # use annals_projections::{PgCheckpoints, ProjectionEngine};
//! # use annals_store_postgres::PgEventStore;
//!
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[arg(long)]
//!     database_url: String,
//!     #[command(subcommand)]
//!     command: ProjectionCommand,
//! }
//!
//! # async fn demo() -> annals_projections::Result<()> {
//! let cli = <Cli as clap::Parser>::parse();
//! let store = PgEventStore::connect(&cli.database_url).await?;
//! let engine = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store));
//! // .register(...) your projections
//! execute(&engine, cli.command).await
//! # }
//! ```

use std::{
    io::{BufRead, IsTerminal, Write},
    time::{Duration, Instant},
};

use annals_core::EventStore;
use annals_store_postgres::PgEventStore;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    Error, PgCheckpoints, ProjectionEngine, RebuildOptions, Result, SubscriptionState,
    SubscriptionStatus,
};

/// The operations commands.
#[derive(Clone, Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Create or update the annals tables (idempotent). Run it as the schema's owner.
    Migrate {
        /// Only show which migrations are applied and pending; change nothing.
        #[arg(long)]
        info: bool,
        /// Then give this role what an application needs and no more: read, append, but
        /// never update or delete events (created NOLOGIN if missing; grant it to the
        /// login roles of your services).
        #[arg(long, value_name = "ROLE")]
        app_role: Option<String>,
    },
    /// Show each subscription's state, checkpoint, lag (in events and in time) and dead
    /// letters. Checkpoints and heads are global event numbers.
    Status {
        /// Print JSON for scripts (positions and times as numbers and RFC 3339).
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Exit non-zero, saying why, when a subscription is halted or failed, holds dead
        /// letters, or lags more than --max-lag events or --max-lag-seconds (for alerts and
        /// health checks). The lag counts events an open transaction holds back.
        #[arg(long, conflicts_with = "watch")]
        check: bool,
        /// With --check: the most events a subscription may lag.
        #[arg(long, value_name = "EVENTS", default_value_t = 10_000)]
        max_lag: u64,
        /// With --check: the most seconds a subscription may lag.
        #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
        max_lag_seconds: f64,
        /// Refresh every SECONDS (default 2) until Ctrl-C.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// Run every subscription's worker (projections, relays, process managers) until
    /// Ctrl-C (or SIGTERM).
    Run,
    /// Run only the relays (to NATS), until Ctrl-C (or SIGTERM): relays scale apart from
    /// the projections.
    Relay {
        /// Start the relays at this time (RFC 3339, `2026-11-30T00:00Z`, or a date): every
        /// event recorded since is published, earlier ones are skipped. Refused while a
        /// relay runs elsewhere.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
    },
    /// Rebuild a projection into shadow tables while the live ones keep serving, then swap
    /// them in atomically. An interrupted rebuild resumes when run again.
    Rebuild {
        /// The projection.
        name: String,
        /// Throw away an unfinished rebuild instead (the live tables are not touched).
        #[arg(long)]
        discard: bool,
        /// Dead-letter events the handler refuses instead of stopping, even when the
        /// projection's policy is to halt (by default the rebuild follows the policy).
        #[arg(long, conflicts_with = "discard")]
        skip_failures: bool,
        /// Build the read model as it stood at this time (RFC 3339, `2026-11-30T00:00Z`,
        /// or a date) into the shadow, and stop there without swapping, for inspection;
        /// `rebuild NAME` later finishes it and swaps it in.
        #[arg(long, value_name = "TIME", value_parser = parse_time, conflicts_with = "discard")]
        until: Option<DateTime<Utc>>,
    },
    /// Empty a projection's tables and replay the log into them (readers see an empty
    /// table meanwhile: for small read models; prefer `rebuild`).
    Reset {
        /// The projection.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Move the event a halted subscription stopped on into its dead letters (with the
    /// error and attempts) and let it go on; a running worker resumes by itself. Retry or
    /// discard the letter after the fix.
    Skip {
        /// The halted subscription.
        name: String,
        /// Also park the later events of that event's stream behind it (recorded as dead
        /// letters, applied in order when it is retried or discarded), so the stream's
        /// effects never happen out of order.
        #[arg(long)]
        park_stream: bool,
    },
    /// Decode every stored event (or a sample, or those recorded since a time) with the
    /// current code and upcasters, writing nothing; report per event type how many decode
    /// and the first failures, and exit non-zero when any fails.
    Verify {
        /// Only events recorded since this time.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Check one event in N.
        #[arg(long, value_name = "N", default_value_t = 1)]
        sample: u64,
    },
    /// List, retry or discard dead-lettered events.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

/// The `dead-letters` commands.
#[derive(Clone, Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters.
    List {
        /// Only this projection's.
        #[arg(long)]
        projection: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Run the handler on a dead-lettered event again; removes it when it succeeds.
    Retry {
        /// The dead letter's id (from `list`).
        id: i64,
    },
    /// Delete a dead letter without applying it.
    Discard {
        /// The dead letter's id (from `list`).
        id: i64,
    },
}

type Engine = ProjectionEngine<PgEventStore, PgCheckpoints>;

/// Runs one command, printing its results on standard output.
///
/// # Errors
///
/// Whatever the command hits: unknown projections (the error lists the known ones),
/// store errors, a failed rebuild. The caller should exit non-zero.
pub async fn execute(engine: &Engine, command: ProjectionCommand) -> Result<()> {
    if !matches!(command, ProjectionCommand::Migrate { .. }) {
        ensure_migrated(engine.store()).await?;
    }
    match command {
        ProjectionCommand::Migrate { info: true, .. } => migration_info(engine.store()).await,
        ProjectionCommand::Migrate {
            info: false,
            app_role,
        } => {
            let store = engine.store();
            let before = store.migration_status().await?;
            store.migrate().await?;
            if before.pending.is_empty() {
                println!("schema {} is up to date; nothing to apply", store.schema());
            }
            for m in &before.pending {
                println!("applied  {:04} {}", m.version, m.description);
            }
            if !before.pending.is_empty() {
                println!("migrated schema {}", store.schema());
            }
            if let Some(role) = app_role {
                store.grant_app_role(&role).await?;
                println!(
                    "granted {role} on schema {}: read and append; events cannot be updated or deleted",
                    store.schema()
                );
            }
            Ok(())
        }
        ProjectionCommand::Status {
            json,
            check,
            max_lag,
            max_lag_seconds,
            watch,
        } => match watch {
            Some(every) => watch_status(engine, every).await,
            None => {
                let statuses = status(engine, json).await?;
                if check {
                    check_status(&statuses, max_lag, max_lag_seconds)?;
                }
                Ok(())
            }
        },
        ProjectionCommand::Run => run(engine, None).await,
        ProjectionCommand::Relay { from } => {
            if let Some(from) = from {
                relay_from(engine, from).await?;
            }
            run(engine, Some("relay")).await
        }
        ProjectionCommand::Rebuild {
            name,
            discard: true,
            ..
        } => {
            if engine.discard_rebuild(&name).await? {
                println!(
                    "discarded the unfinished rebuild of {name}; the live tables were not touched"
                );
            } else {
                println!("no unfinished rebuild of {name}");
            }
            Ok(())
        }
        ProjectionCommand::Rebuild {
            name,
            discard: false,
            skip_failures,
            until,
        } => rebuild(engine, &name, skip_failures, until).await,
        ProjectionCommand::Reset { name, yes } => reset(engine, &name, yes).await,
        ProjectionCommand::Skip { name, park_stream } => {
            let letter = engine.skip(&name, park_stream).await?;
            println!("skipped into dead letter {letter}");
            if park_stream {
                println!(
                    "later events of {} are parked behind it until `dead-letters retry {}` or `discard {}`",
                    letter.stream_id, letter.id, letter.id
                );
            }
            Ok(())
        }
        ProjectionCommand::DeadLetters(command) => dead_letters(engine, command).await,
        ProjectionCommand::Verify { since, sample } => verify(engine, since, sample).await,
    }
}

/// Fails fast, with the fix, on a database `migrate` has not prepared (instead of workers
/// retrying "relation does not exist" forever).
async fn ensure_migrated(store: &PgEventStore) -> Result<()> {
    let status = store.migration_status().await?;
    if status.pending.is_empty() {
        return Ok(());
    }
    Err(Error::NotMigrated {
        schema: store.schema().to_owned(),
        database: store
            .pool()
            .connect_options()
            .get_database()
            .unwrap_or("(default)")
            .to_owned(),
        pending: status.pending.len(),
    })
}

async fn migration_info(store: &PgEventStore) -> Result<()> {
    let status = store.migration_status().await?;
    println!("schema {}", store.schema());
    for m in &status.applied {
        println!("  applied  {:04} {}", m.version, m.description);
    }
    for m in &status.pending {
        println!("  pending  {:04} {}", m.version, m.description);
    }
    for version in &status.unknown {
        println!("  unknown  {version:04} (applied by a newer release: upgrade this binary)");
    }
    if status.is_current() {
        println!("up to date");
    } else if !status.pending.is_empty() {
        println!("{} pending: run `migrate`", status.pending.len());
    }
    Ok(())
}

/// A duration as an operator reads it: `42s`, `3m 12s`, `5h 2m`, `3d 4h`.
fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// How long ago `at` was.
fn ago(at: Option<chrono::DateTime<chrono::Utc>>, now: chrono::DateTime<chrono::Utc>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| {
            format!(
                "{} ago",
                human((now - at).num_milliseconds() as f64 / 1000.0)
            )
        },
    )
}

/// Prints `value` as one line of JSON.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let line = serde_json::to_string(value).map_err(Error::backend)?;
    println!("{line}");
    Ok(())
}

/// Why `status --check` fails, if it does.
fn check_status(statuses: &[SubscriptionStatus], max_lag: u64, max_seconds: f64) -> Result<()> {
    let mut problems = Vec::new();
    for s in statuses {
        if matches!(
            s.state,
            SubscriptionState::Halted | SubscriptionState::Failed
        ) {
            problems.push(format!("{} is {}", s.name, s.state));
        }
        if s.dead_letters > 0 {
            problems.push(format!("{} holds {} dead letters", s.name, s.dead_letters));
        }
        let lag = s.lag + s.horizon_lag;
        if lag > max_lag {
            problems.push(format!(
                "{} lags {lag} events (more than {max_lag})",
                s.name
            ));
        }
        if s.lag_seconds > max_seconds {
            problems.push(format!(
                "{} lags {} (more than {})",
                s.name,
                human(s.lag_seconds),
                human(max_seconds)
            ));
        }
    }
    if problems.is_empty() {
        println!("check passed");
        return Ok(());
    }
    Err(Error::Unhealthy(problems))
}

/// `status`, refreshed in place on a terminal, until a shutdown signal.
async fn watch_status(engine: &Engine, every: f64) -> Result<()> {
    let every = Duration::from_secs_f64(every.max(0.2));
    let terminal = std::io::stdout().is_terminal();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        if terminal {
            // Clear the screen and go home, then draw.
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "{} (every {}s; Ctrl-C to stop)",
            chrono::Utc::now().format("%H:%M:%S"),
            every.as_secs_f64()
        );
        status(engine, false).await?;
        if !terminal {
            println!();
        }
        let _ = std::io::stdout().flush();
        tokio::select! {
            () = &mut signal => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn status(engine: &Engine, json: bool) -> Result<Vec<SubscriptionStatus>> {
    let statuses = engine.status().await?;
    if json {
        print_json(&statuses)?;
        return Ok(statuses);
    }
    let now = chrono::Utc::now();
    if let Some(at) = statuses.iter().find_map(|s| s.last_event_at) {
        let head = engine.store().head().await?;
        println!(
            "log head: event {}, recorded {}",
            head.sequence(),
            ago(Some(at), now)
        );
    }
    // Every log subscription carries the same horizon lag: ask who holds it only then.
    let held_back = statuses.iter().map(|s| s.horizon_lag).max().unwrap_or(0);
    if held_back > 0 {
        println!(
            "log horizon: {held_back} committed events are held back from every reader by an open transaction"
        );
        if let Some(h) = engine.store().horizon_holder().await? {
            println!(
                "  pid {} (database {}, user {}, {}) open for {}: {}",
                h.pid,
                h.database.as_deref().unwrap_or("?"),
                h.user.as_deref().unwrap_or("?"),
                h.state.as_deref().unwrap_or("?"),
                human(h.transaction_age_seconds),
                h.query.as_deref().unwrap_or("")
            );
            println!("  end it, or bound such sessions with idle_in_transaction_session_timeout");
        }
    }
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header([
            "SUBSCRIPTION",
            "KIND",
            "STATE",
            "CHECKPOINT",
            "HEAD",
            "LAG",
            "BEHIND BY",
            "CHECKPOINT EVENT",
            "MOVED",
            "DEAD LETTERS",
        ]);
    for s in &statuses {
        let behind = if s.lag == 0 {
            "-".to_owned()
        } else {
            human(s.lag_seconds)
        };
        table.add_row([
            s.name.clone(),
            s.kind.to_owned(),
            s.state.to_string(),
            s.checkpoint.sequence().to_string(),
            s.head.sequence().to_string(),
            s.lag.to_string(),
            behind,
            ago(s.checkpoint_event_at, now),
            ago(s.checkpoint_at, now),
            s.dead_letters.to_string(),
        ]);
    }
    for column in table.column_iter_mut().skip(3) {
        column.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    println!("{table}");
    for s in &statuses {
        if !s.details.is_empty() {
            let figures: Vec<String> = s
                .details
                .iter()
                .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
                .collect();
            println!("{}: {}", s.name, figures.join(", "));
        }
        if let Some(error) = &s.error {
            println!("{} {}: {error}", s.name, s.state);
            if s.state == SubscriptionState::Halted {
                println!(
                    "  the event it stopped on can be skipped into the dead letters: `skip {}`",
                    s.name
                );
            }
        }
        if let Some(at) = s.unfinished_rebuild {
            println!(
                "{}: an interrupted rebuild stands at event {} (`rebuild {}` resumes it, `--discard` drops it)",
                s.name,
                at.sequence(),
                s.name
            );
        }
    }
    Ok(statuses)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the workers of every subscription, or of one kind, until a shutdown signal.
async fn run(engine: &Engine, kind: Option<&str>) -> Result<()> {
    let running = engine.start_where(|_, k| kind.is_none_or(|want| want == k));
    let names = running.names();
    if names.is_empty() {
        return Err(Error::Unsupported(
            "no subscription of that kind is registered (a relay needs NATS settings)",
        ));
    }
    println!("running {}; Ctrl-C to stop", names.join(", "));
    let _ = std::io::stdout().flush();
    tokio::select! {
        () = shutdown_signal() => {
            println!("stopping after the current batches");
            running.shutdown().await;
            Ok(())
        }
        failed = running.failure() => {
            running.shutdown().await;
            Err(failed)
        }
    }
}

/// Progress on a terminal: a bar with rate and ETA; otherwise a line every few seconds.
struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    fn new(label: String) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.clone());
            bar
        });
        Self {
            label,
            bar,
            started: Instant::now(),
            last_line: None,
        }
    }

    /// `done` of `total` global event numbers; `last` forces a line.
    fn update(&mut self, done: u64, total: u64, last: bool) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            return;
        }
        if !last
            && self
                .last_line
                .is_some_and(|at| at.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.last_line = Some(Instant::now());
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let left = total.saturating_sub(done) as f64 / rate.max(1.0);
        eprintln!(
            "{}: {done}/{total} events ({:.0}%), {rate:.0} events/s, ETA {}",
            self.label,
            100.0 * done as f64 / total.max(1) as f64,
            human(left)
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// A rebuild: swapped in when it has caught up, or, `until` a time, kept in the shadow for
/// inspection.
async fn rebuild(
    engine: &Engine,
    name: &str,
    skip_failures: bool,
    until: Option<DateTime<Utc>>,
) -> Result<()> {
    if let Some(at) = engine.rebuild_checkpoint(name).await? {
        println!(
            "resuming the unfinished rebuild of {name} from event {} (use --discard to start over)",
            at.sequence()
        );
    }
    let mut options = RebuildOptions::default().skip_failures(skip_failures);
    let mut label = format!("rebuilding {name}");
    if let Some(until) = until {
        options = options.until(engine.store().position_at(until).await?);
        label.push_str(&format!(" as of {until}"));
    }
    let mut progress = Progress::new(label);
    // The rebuild future is dropped on a signal: its open shadow batch rolls back and its
    // lease is released, so nothing is left claiming to run.
    let outcome = tokio::select! {
        result = engine.rebuild_with(name, &options, |p| progress.update(p.done, p.total, p.swapped)) => Some(result),
        () = shutdown_signal() => None,
    };
    let Some(result) = outcome else {
        progress.abandon();
        let at = engine.rebuild_checkpoint(name).await?;
        let at = at.map_or_else(
            || "the start".to_owned(),
            |at| format!("event {}", at.sequence()),
        );
        println!(
            "interrupted: the rebuild of {name} stopped at {at}; the live tables were not touched"
        );
        println!("run the same command again to resume, or `rebuild {name} --discard` to drop it");
        return Err(Error::Interrupted(format!("rebuild of {name}")));
    };
    match &result {
        Ok(_) => progress.finish(),
        Err(_) => progress.abandon(),
    }
    let at = result?;
    if let Some(until) = until {
        println!(
            "rebuilt {name} as of {until} (events up to {}) in the shadow schema {}; not swapped",
            at.sequence(),
            engine.checkpoints().shadow_schema(name)
        );
        println!("inspect it there; `rebuild {name}` finishes it and swaps it in, `rebuild {name} --discard` drops it");
        return Ok(());
    }
    let letters = engine.dead_letters(Some(name)).await?.len();
    println!(
        "rebuilt {name} and swapped it in at event {} in {}; live workers continue from there",
        at.sequence(),
        human(progress.started.elapsed().as_secs_f64())
    );
    if letters > 0 {
        println!("{letters} dead letters (`dead-letters list --projection {name}`)");
    }
    Ok(())
}

/// A time on the command line: RFC 3339, `2026-11-30T00:00Z` (no seconds), or a date (its
/// midnight, UTC).
fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "`{s}` is not a time: use RFC 3339 (2026-11-30T00:00:00Z), 2026-11-30T00:00Z or 2026-11-30"
    ))
}

async fn verify(engine: &Engine, since: Option<DateTime<Utc>>, sample: u64) -> Result<()> {
    let catalog = engine.catalog().ok_or(Error::Unsupported(
        "verify needs the application's event types (ProjectionEngine::with_catalog)",
    ))?;
    let mut options = annals_core::catalog::Verify::default().sample_every(sample);
    if let Some(since) = since {
        options = options.after(engine.store().position_at(since).await?);
    }
    let mut progress = Progress::new("verifying stored events".to_owned());
    let report = annals_core::catalog::verify(engine.store(), catalog, &options, |read, head| {
        progress.update(read, head.sequence(), false)
    })
    .await?;
    progress.finish();
    for (event_type, (ok, failed)) in &report.decoded {
        println!("  {event_type:<32} {ok:>9} decode  {failed:>6} fail");
    }
    for (event_type, n) in &report.unknown {
        println!("  {event_type:<32} {n:>9} not in the catalog (not checked)");
    }
    for f in &report.failures {
        println!(
            "  FAILED {}@{} ({}) at event {}: {}",
            f.stream_id,
            f.stream_version,
            f.event_type,
            f.position.sequence(),
            f.error
        );
    }
    let failed = report.failed();
    if failed > 0 {
        return Err(Error::Unhealthy(vec![format!(
            "{failed} of {} events do not decode with the current code",
            report.read
        )]));
    }
    println!("{} events read; every checked one decodes", report.read);
    Ok(())
}

/// Moves every relay's checkpoint to where the events recorded since `from` begin.
async fn relay_from(engine: &Engine, from: DateTime<Utc>) -> Result<()> {
    let position = engine.store().position_at(from).await?;
    let statuses = engine.status().await?;
    let relays: Vec<&str> = statuses
        .iter()
        .filter(|s| s.kind == "relay")
        .map(|s| s.name.as_str())
        .collect();
    if relays.is_empty() {
        return Err(Error::Unsupported(
            "no relay is registered (a relay needs NATS settings)",
        ));
    }
    for name in relays {
        let was = engine.start_from(name, position).await?;
        println!(
            "{name} starts at {from}: after event {} (it was after event {})",
            position.sequence(),
            was.sequence()
        );
    }
    Ok(())
}

fn confirm(name: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Unsupported(
            "reset needs --yes when there is no terminal to confirm on",
        ));
    }
    print!("reset empties {name}'s tables and replays the whole log; readers see an empty table meanwhile.\ntype the projection name to confirm: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(Error::backend)?;
    Ok(line.trim() == name)
}

async fn reset(engine: &Engine, name: &str, yes: bool) -> Result<()> {
    engine.rebuild_checkpoint(name).await?;
    if !yes && !confirm(name)? {
        println!("not confirmed; nothing changed");
        return Ok(());
    }
    engine.reset(name).await?;
    let head = engine.store().head().await?;
    println!(
        "reset {name}; replaying the log up to event {}",
        head.sequence()
    );
    let _ = std::io::stdout().flush();
    let running = engine.start_where(|n, _| n == name);
    let mut progress = Progress::new(format!("replaying {name}"));
    let outcome = {
        let caught_up = running.wait_until_caught_up(head, Duration::from_secs(24 * 3600));
        tokio::pin!(caught_up);
        let signal = shutdown_signal();
        tokio::pin!(signal);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                result = &mut caught_up => break Some(result),
                () = &mut signal => break None,
                _ = tick.tick() => {
                    let statuses = running.status().await;
                    if let Some(s) = statuses.iter().flatten().find(|s| s.name == name) {
                        progress.update(s.checkpoint.sequence(), head.sequence(), false);
                    }
                }
            }
        }
    };
    running.shutdown().await;
    let Some(result) = outcome else {
        progress.abandon();
        let at = engine
            .status()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.checkpoint.sequence());
        println!(
            "interrupted: {name} replayed up to event {at} of {}; `run` continues from there",
            head.sequence()
        );
        return Err(Error::Interrupted(format!("replay of {name}")));
    };
    match &result {
        Ok(()) => {
            progress.update(head.sequence(), head.sequence(), true);
            progress.finish();
        }
        Err(_) => progress.abandon(),
    }
    result?;
    println!("replayed {name} up to event {}", head.sequence());
    Ok(())
}

async fn dead_letters(engine: &Engine, command: DeadLetterCommand) -> Result<()> {
    match command {
        DeadLetterCommand::List { projection, json } => {
            let letters = engine.dead_letters(projection.as_deref()).await?;
            if json {
                return print_json(&letters);
            }
            if letters.is_empty() {
                println!("no dead letters");
            }
            for letter in letters {
                println!("{letter}");
            }
        }
        DeadLetterCommand::Retry { id } => {
            engine.retry_dead_letter(id).await?;
            println!("dead letter {id} applied and removed");
        }
        DeadLetterCommand::Discard { id } => {
            engine.discard_dead_letter(id).await?;
            println!("dead letter {id} discarded");
        }
    }
    Ok(())
}
