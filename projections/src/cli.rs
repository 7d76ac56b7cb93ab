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
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Error, PgCheckpoints, ProjectionEngine, RebuildProgress, Result, SubscriptionStatus};

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
    /// Show each projection's checkpoint, head, lag, state and dead letters.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Run every subscription's worker (projections, relays, process managers) until
    /// Ctrl-C (or SIGTERM).
    Run,
    /// Run only the relays (to NATS), until Ctrl-C (or SIGTERM): relays scale apart from
    /// the projections.
    Relay,
    /// Rebuild a projection into shadow tables while the live ones keep serving, then swap
    /// them in atomically. An interrupted rebuild resumes when run again.
    Rebuild {
        /// The projection.
        name: String,
        /// Throw away an unfinished rebuild instead (the live tables are not touched).
        #[arg(long)]
        discard: bool,
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
            store.migrate().await?;
            println!("migrated schema {}", store.schema());
            if let Some(role) = app_role {
                store.grant_app_role(&role).await?;
                println!(
                    "granted {role} on schema {}: read and append; events cannot be updated or deleted",
                    store.schema()
                );
            }
            Ok(())
        }
        ProjectionCommand::Status { json } => status(engine, json).await,
        ProjectionCommand::Run => run(engine, None).await,
        ProjectionCommand::Relay => run(engine, Some("relay")).await,
        ProjectionCommand::Rebuild {
            name,
            discard: true,
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
        } => rebuild(engine, &name).await,
        ProjectionCommand::Reset { name, yes } => reset(engine, &name, yes).await,
        ProjectionCommand::DeadLetters(command) => dead_letters(engine, command).await,
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

fn status_json(s: &SubscriptionStatus) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "kind": s.kind,
        "state": s.state.to_string(),
        "checkpoint": s.checkpoint.to_string(),
        "head": s.head.to_string(),
        "lag": s.lag,
        "dead_letters": s.dead_letters,
        "error": s.error,
    })
}

async fn status(engine: &Engine, json: bool) -> Result<()> {
    let statuses = engine.status().await?;
    if json {
        let all: Vec<_> = statuses.iter().map(status_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(());
    }
    println!(
        "{:<24} {:<11} {:<10} {:>16} {:>16} {:>10} {:>12}",
        "SUBSCRIPTION", "KIND", "STATE", "CHECKPOINT", "HEAD", "LAG", "DEAD LETTERS"
    );
    for s in &statuses {
        println!(
            "{:<24} {:<11} {:<10} {:>16} {:>16} {:>10} {:>12}",
            s.name,
            s.kind,
            s.state.to_string(),
            s.checkpoint.to_string(),
            s.head.to_string(),
            s.lag,
            s.dead_letters
        );
        if let Some(error) = &s.error {
            println!("  halted: {error}");
        }
    }
    Ok(())
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
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Progress {
    fn new(name: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(format!("rebuilding {name}"));
            bar
        });
        Self {
            bar,
            last_line: None,
        }
    }

    fn update(&mut self, p: &RebuildProgress, started: Instant) {
        if let Some(bar) = &self.bar {
            bar.set_length(p.total);
            bar.set_position(p.done);
            return;
        }
        if self
            .last_line
            .is_some_and(|at| at.elapsed() < Duration::from_secs(2))
            && !p.swapped
        {
            return;
        }
        self.last_line = Some(Instant::now());
        let rate = p.done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let left = p.total.saturating_sub(p.done) as f64 / rate.max(1.0);
        eprintln!(
            "rebuild {}: {}/{} events ({:.0}%), {:.0} events/s, ETA {:.0}s",
            p.projection,
            p.done,
            p.total,
            100.0 * p.done as f64 / p.total.max(1) as f64,
            rate,
            left
        );
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

async fn rebuild(engine: &Engine, name: &str) -> Result<()> {
    if let Some(at) = engine.rebuild_checkpoint(name).await? {
        println!(
            "resuming the unfinished rebuild of {name} from {at} (use --discard to start over)"
        );
    }
    let started = Instant::now();
    let mut progress = Progress::new(name);
    let result = engine.rebuild(name, |p| progress.update(p, started)).await;
    progress.finish();
    let at = result?;
    println!(
        "rebuilt {name} and swapped it in at {at} in {:.1}s; live workers continue from there",
        started.elapsed().as_secs_f64()
    );
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
    println!("reset {name}; replaying up to {head}");
    let running = engine.start();
    let caught_up = running
        .wait_until_caught_up(head, Duration::from_secs(24 * 3600))
        .await;
    running.shutdown().await;
    caught_up?;
    println!("replayed {name} up to {head}");
    Ok(())
}

async fn dead_letters(engine: &Engine, command: DeadLetterCommand) -> Result<()> {
    match command {
        DeadLetterCommand::List { projection } => {
            let letters = engine.dead_letters(projection.as_deref()).await?;
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
