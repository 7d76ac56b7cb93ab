//! Run with: `cargo run -p bank` (the scenario on the in-memory store), or
//! `cargo run -p bank -- --database-url postgres://root@127.0.0.1:5432/test` (PostgreSQL).
//!
//! The annals bank example: opens accounts, moves money, shows a rejected withdrawal,
//! reloads an account from its events, prints its stream and the `account_balances` read
//! model. With `--database-url` it also registers a customer through the outbox (a table
//! row and its event in one transaction) and mounts the annals operations CLI: `migrate`,
//! `status`, `run`, `relay`, `rebuild`, `reset`, `dead-letters`. With `--nats-url` (or
//! `NATS_URL`) a relay publishes the account and customer events to NATS JetStream.

use std::{io::IsTerminal, time::Duration};

use annals_nats::{NatsOptions, Relay, RelayOptions};
use annals_projections::{
    cli::{execute, ProjectionCommand},
    FailurePolicy, MemoryCheckpoints, PgCheckpoints, ProcessRuntime, ProjectionEngine, RetryPolicy,
};
use annals_store_memory::MemoryEventStore;
use annals_store_postgres::PgEventStore;
use anyhow::Context;
use bank::{
    balances::{self, AccountBalances, BalanceRow},
    transfer::{Accounts, Transfer},
};
use clap::{parser::ValueSource, CommandFactory, FromArgMatches, Parser, Subcommand};

/// How long the scenario waits for its read model.
const CATCH_UP: Duration = Duration::from_secs(30);

/// The annals bank example.
#[derive(Debug, Parser)]
#[command(name = "bank", version, about)]
struct Cli {
    /// PostgreSQL URL (postgres://user@host:port/database; the password is better left to
    /// PGPASSWORD or ~/.pgpass). The operations commands and `simulate` also read
    /// DATABASE_URL; the scenario runs on the in-memory store unless this flag is given.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// NATS server(s) a relay publishes the bank's events to (`nats://host:4222`,
    /// `tls://...`). Credentials and TLS files come from the environment: `NATS_USER` and
    /// `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_NKEY_SEED`, `NATS_CREDS`, `NATS_CA`,
    /// `NATS_CERT`, `NATS_KEY` (each secret also as `<VAR>_FILE`).
    #[arg(long, global = true, env = "NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// Log format on standard error: `text` (coloured only on a terminal) or `json` (one
    /// object per line, for log shippers). The level comes from RUST_LOG (default: warn).
    #[arg(long, global = true, env = "BANK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve Prometheus metrics (lag, dead letters, durations, commands, publishes,
    /// timers) over HTTP on this address, e.g. `127.0.0.1:9464`.
    #[arg(long, global = true, env = "BANK_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo scenario (the default).
    Scenario,
    /// Issue pseudo-random deposits and withdrawals (load for demos and tests).
    Simulate {
        /// How many accounts.
        #[arg(long, default_value_t = 10)]
        accounts: usize,
        /// How many commands.
        #[arg(long, default_value_t = 100)]
        commands: usize,
        /// Account id prefix.
        #[arg(long, default_value = "sim")]
        prefix: String,
    },
    /// The `statements` service: account balances kept from NATS JetStream through an inbox
    /// consumer, in the schema `statements` (`bank statements run`, `status`,
    /// `dead-letters list|retry|discard`, `migrate`). Needs --nats-url.
    Statements {
        #[command(subcommand)]
        command: ProjectionCommand,
    },
    /// Write the bank's event schemas to a file, or check the code against one (exit 1,
    /// naming each incompatible change). Needs no database.
    Schemas {
        /// `write` or `check`.
        #[arg(value_parser = ["write", "check"])]
        action: String,
        /// The schema file.
        #[arg(default_value = bank::SCHEMA_FILE)]
        file: std::path::PathBuf,
    },
    /// Print a shell completion script (`bank completions bash > /etc/bash_completion.d/bank`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Ops(ProjectionCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Output piped into `head` ends quietly when the reader goes, as Unix tools do, instead
    // of a panic on the broken pipe.
    sigpipe::reset();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Once, with its causes, and no backtrace (RUST_BACKTRACE is for panics).
            eprintln!("error: {}", report(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: many errors already print their
/// source in their own message, and `{:#}` would repeat it.
fn report(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Logs on standard error, without colour codes unless it is a terminal.
fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

async fn run() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    init_logs(cli.log_format);
    if let Some(addr) = cli.metrics_addr {
        let bound = bank::metrics::serve(addr).await?;
        eprintln!("metrics on http://{bound}/metrics");
    }
    let nats = nats_options(cli.nats_url.as_deref())?;
    let command = cli.command.unwrap_or(Command::Scenario);
    if let Command::Schemas { action, file } = &command {
        let catalog = bank::catalog();
        if action == "write" {
            std::fs::write(file, catalog.schema_file())
                .with_context(|| format!("writing {}", file.display()))?;
            println!(
                "wrote the schemas of {} event types to {}",
                catalog.event_types().count(),
                file.display()
            );
            return Ok(());
        }
        let recorded =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        if let Err(changes) = catalog.check_schema_file(&recorded) {
            for change in &changes {
                println!("  {change}");
            }
            anyhow::bail!(
                "{} incompatible schema changes against {}",
                changes.len(),
                file.display()
            );
        }
        println!("the event schemas are compatible with {}", file.display());
        return Ok(());
    }
    if let Command::Completions { shell } = command {
        clap_complete::generate(shell, &mut Cli::command(), "bank", &mut std::io::stdout());
        return Ok(());
    }
    // The demo never writes to a database found in the environment by accident.
    let from_env = matches.value_source("database_url") == Some(ValueSource::EnvVariable);
    let database_url = match command {
        Command::Scenario if from_env => None,
        _ => cli.database_url,
    };
    match (command, database_url) {
        (Command::Scenario, None) => scenario_in_memory().await,
        (Command::Scenario, Some(url)) => scenario_on_postgres(&connect(&url).await?, nats).await,
        (
            Command::Simulate {
                accounts,
                commands,
                prefix,
            },
            None,
        ) => bank::simulate(MemoryEventStore::new(), &prefix, accounts, commands)
            .await
            .map(drop),
        (
            Command::Simulate {
                accounts,
                commands,
                prefix,
            },
            Some(url),
        ) => bank::simulate(connect(&url).await?, &prefix, accounts, commands)
            .await
            .map(drop),
        (Command::Statements { .. }, None) => {
            anyhow::bail!("the statements service needs a database: --database-url or DATABASE_URL")
        }
        (Command::Statements { command }, Some(url)) => {
            let nats = nats.context("the statements service reads NATS: --nats-url or NATS_URL")?;
            let store = bank::statements::connect(&url).await?;
            if matches!(command, ProjectionCommand::Run)
                && !store.migration_status().await?.is_current()
            {
                store
                    .migrate()
                    .await
                    .context("migrating the statements schema")?;
            }
            let engine = ProjectionEngine::new(store.clone(), PgCheckpoints::new(&store))
                .consume(bank::statements::consumer(nats));
            Ok(execute(&engine, command).await?)
        }
        (Command::Completions { .. } | Command::Schemas { .. }, _) => Ok(()),
        (Command::Ops(_), None) => {
            anyhow::bail!("this command needs a database: --database-url or DATABASE_URL")
        }
        (Command::Ops(command), Some(url)) => {
            let store = PgEventStore::connect(&url).await?;
            Ok(execute(&engine(&store, nats), command).await?)
        }
    }
}

/// NATS settings from the environment, with `--nats-url` for the servers; `None` without a
/// URL (no relay then).
fn nats_options(url: Option<&str>) -> anyhow::Result<Option<NatsOptions>> {
    let Some(url) = url else { return Ok(None) };
    let options = NatsOptions::from_env()
        .context("reading the NATS settings")?
        .with_servers(url)
        .name("bank");
    Ok(Some(options))
}

/// The bank's relay: account and customer events, to the `ANNALS` stream.
fn relay(nats: NatsOptions) -> Relay {
    Relay::new(
        "bank-relay",
        nats,
        RelayOptions::new().categories(["account", "customer"]),
    )
}

/// The transfer process manager over `store`, its timers in `processes`.
fn transfers<S, T>(store: &S, processes: &T) -> ProcessRuntime<Transfer, S, T, Accounts<S>>
where
    S: annals_core::EventStore + annals_core::SnapshotStore + Clone + 'static,
    T: annals_projections::ProcessStore,
{
    ProcessRuntime::new(
        store.clone(),
        processes.clone(),
        Accounts::new(store.clone()),
    )
    .on_failure(
        RetryPolicy {
            attempts: 10,
            ..RetryPolicy::default()
        },
        FailurePolicy::Halt,
    )
}

/// The engine with the bank's projection and transfer process and, with NATS settings,
/// its relay.
fn engine(
    store: &PgEventStore,
    nats: Option<NatsOptions>,
) -> ProjectionEngine<PgEventStore, PgCheckpoints> {
    let checkpoints = PgCheckpoints::new(store);
    let engine = ProjectionEngine::new(store.clone(), checkpoints.clone())
        .with_catalog(bank::catalog())
        .register(AccountBalances::from_env())
        .subscribe(transfers(store, &checkpoints));
    match nats {
        Some(nats) => engine.subscribe(relay(nats)),
        None => engine,
    }
}

/// Connects, and migrates when the schema is not up to date (a role that may not run DDL,
/// such as one set up by `migrate --app-role`, works once the owner has migrated).
async fn connect(url: &str) -> anyhow::Result<PgEventStore> {
    let store = PgEventStore::connect(url).await?;
    if !store.migration_status().await?.is_current() {
        store.migrate().await.context(
            "migrating the annals schema (a role that may not create tables needs the owner to run `bank migrate` first)",
        )?;
    }
    Ok(store)
}

/// Account ids carry a per-run suffix, so the scenario can run again on a database that
/// still holds the previous run's accounts.
fn run_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()[20..].to_owned()
}

async fn scenario_in_memory() -> anyhow::Result<()> {
    println!("annals bank example on the in-memory store");
    let run_id = run_id();
    let store = MemoryEventStore::new();
    let read = MemoryCheckpoints::new();
    let projections = ProjectionEngine::new(store.clone(), read.clone())
        .register(AccountBalances::from_env())
        .subscribe(transfers(&store, &read))
        .start();
    bank::run_scenario(store.clone(), &run_id).await?;
    let last = bank::transfer::demo(store, &run_id).await?;
    projections.wait_until_caught_up(last, CATCH_UP).await?;
    projections.shutdown().await;
    let rows = read.rows::<BalanceRow>(balances::TABLE);
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|(id, _)| !id.starts_with("carol"))
        .collect();
    bank::print_balances(rows.into_iter().filter(|(id, _)| id.ends_with(&run_id)));
    Ok(())
}

async fn scenario_on_postgres(
    store: &PgEventStore,
    nats: Option<NatsOptions>,
) -> anyhow::Result<()> {
    println!(
        "annals bank example on PostgreSQL (schema {})",
        store.schema()
    );
    let run_id = run_id();
    let publishing = nats.is_some();
    if let Some(nats) = &nats {
        relay(nats.clone())
            .connect()
            .await
            .context("connecting the relay to NATS")?;
    }
    let engine = engine(store, nats);
    let projections = engine.start();
    bank::run_scenario(store.clone(), &run_id).await?;
    let mut last = bank::transfer::demo(store.clone(), &run_id).await?;

    println!("== registering a customer: a table row and its event in one transaction");
    bank::customers::setup(store).await?;
    let customer = format!("grace-{run_id}");
    let registered =
        bank::customers::register(store, &customer, "Grace Hopper", "grace@example.com").await?;
    last = last.max(registered.position);
    for (id, name, email) in bank::customers::rows(store, &[&customer]).await? {
        println!(
            "   {id:<14} {name:<13} {email} (event at {})",
            registered.position
        );
    }

    projections.wait_until_caught_up(last, CATCH_UP).await?;
    if publishing {
        let status = projections.status().await?;
        if let Some(relay) = status.iter().find(|s| s.kind == "relay") {
            println!(
                "== the relay published the account and customer events to NATS (stream ANNALS, checkpoint {})",
                relay.checkpoint
            );
        }
    }
    projections.shutdown().await;
    let accounts = [format!("ada-{run_id}"), format!("bob-{run_id}")];
    let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let rows = balances::pg_rows(engine.checkpoints().pool(), &accounts)
        .await
        .context("reading account_balances")?;
    bank::print_balances(rows);
    Ok(())
}
