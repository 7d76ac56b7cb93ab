//! The bank binary's Prometheus endpoint, scraped while `run` works: lag (processing and
//! horizon), batch and handler histograms with buckets, events processed, commands by
//! outcome, appends, and the transfer process's timers and open instances.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::Stdio,
    time::{Duration, Instant},
};

use annals_store_postgres::testkit::TestDatabase;
use bank::transfer::{self, RequestTransfer};
use common::bank;

fn scrape(addr: &str) -> String {
    let mut socket = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    socket.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exposes_prometheus_metrics() {
    let db = TestDatabase::new().await;
    let url = db.url();
    let out = bank(
        &url,
        &[
            "simulate",
            "--accounts",
            "3",
            "--commands",
            "30",
            "--prefix",
            "m",
        ],
        &[],
    )
    .output()
    .expect("simulate");
    assert!(out.status.success());
    let mut run = bank(&url, &["run", "--metrics-addr", "127.0.0.1:0"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let mut stderr = BufReader::new(run.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("the metrics address");
    let addr = line
        .trim()
        .strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address: {line}"))
        .to_owned();

    transfer::request(
        db.store().clone(),
        "mt",
        RequestTransfer {
            from: "m-0".into(),
            to: "m-1".into(),
            amount: 1,
            timeout: Duration::from_secs(60),
        },
    )
    .await
    .expect("request a transfer");

    let wanted = [
        "annals_batch_duration_seconds_bucket{subscription=\"account_balances\",le=\"0.005\"}",
        "annals_handler_duration_seconds_bucket{subscription=\"account_balances\"",
        "annals_events_processed_total{subscription=\"account_balances\"}",
        "annals_subscription_lag_events{subscription=\"account_balances\"} 0",
        "annals_subscription_lag_seconds{subscription=\"account_balances\"} 0",
        "annals_horizon_lag_events{subscription=\"account_balances\"} 0",
        "annals_commands_total{aggregate=\"account\",outcome=",
        "annals_append_duration_seconds_bucket{store=\"postgres\"",
        "annals_process_pending_timers{subscription=\"transfer_saga\"}",
        "annals_process_open_instances{subscription=\"transfer_saga\"} 0",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let metrics = scrape(&addr);
        if wanted.iter().all(|w| metrics.contains(w)) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "missing {:?} in:\n{metrics}",
            wanted
                .iter()
                .filter(|w| !metrics.contains(**w))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !metrics.contains("stream"),
        "a stream id in a label: {metrics}"
    );
    let _ = std::process::Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status();
    run.wait().expect("run");
    db.drop_database().await;
}
