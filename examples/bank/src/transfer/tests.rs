use std::time::Duration;

use annals_projections::testkit::ProcessTest;

use super::*;

fn started() -> TransferEvent {
    TransferEvent::Started {
        transfer: "t1".into(),
        from: "ada".into(),
        to: "bob".into(),
        amount: 500,
        timeout_ms: 30_000,
    }
}

fn debited() -> Observed {
    Observed::Debited {
        transfer: "t1".into(),
        amount: 500,
        currency: "EUR".into(),
    }
}

fn credited() -> Observed {
    Observed::Credited {
        transfer: "t1".into(),
        amount: 500,
    }
}

fn credit() -> (String, AccountCommand) {
    (
        "bob".into(),
        AccountCommand::TransferCredit {
            transfer: "t1".into(),
            amount: 500,
            currency: "EUR".into(),
        },
    )
}

fn refund() -> (String, AccountCommand) {
    (
        "ada".into(),
        AccountCommand::TransferRefund {
            transfer: "t1".into(),
            amount: 500,
        },
    )
}

#[test]
fn a_request_debits_the_source_and_sets_the_timeout() {
    let mut t = ProcessTest::<Transfer>::given([]);
    let step = t.when_event(
        "transfer-t1",
        Observed::Requested {
            from: "ada".into(),
            to: "bob".into(),
            amount: 500,
            timeout_ms: 30_000,
        },
    );
    assert_eq!(step.decisions, [started()]);
    assert_eq!(
        step.commands,
        [(
            "ada".to_owned(),
            AccountCommand::TransferDebit {
                transfer: "t1".into(),
                amount: 500
            }
        )]
    );
    assert_eq!(t.timers().get(TIMEOUT), Some(&Duration::from_secs(30)));
}

#[test]
fn the_debit_leads_to_the_credit_and_the_credit_completes_it() {
    let mut t = ProcessTest::<Transfer>::given([started()]);
    assert_eq!(t.when_event("account-ada", debited()).commands, [credit()]);
    let step = t.when_event("account-bob", credited());
    assert_eq!(step.decisions, [TransferEvent::Completed]);
    assert!(t.state().is_finished() && t.timers().is_empty());
    // The timeout never fires once completed.
    assert!(t.advance(Duration::from_secs(60)).is_empty());
}

#[test]
fn a_refused_credit_refunds_the_source() {
    let mut t = ProcessTest::<Transfer>::given([started()]);
    t.when_event("account-ada", debited());
    let step = t.when_rejected(credit(), "the account is closed");
    assert_eq!(step.commands, [refund()]);
    assert!(!t.state().is_finished());
    let step = t.when_event(
        "account-ada",
        Observed::Refunded {
            transfer: "t1".into(),
            amount: 500,
        },
    );
    assert_eq!(step.decisions, [TransferEvent::Compensated]);
    assert!(t.state().is_finished());
}

#[test]
fn a_timeout_after_the_debit_refunds_and_a_late_credit_is_reversed() {
    let mut t = ProcessTest::<Transfer>::given([started()]);
    t.when_event("account-ada", debited());
    // Not before its time.
    assert!(t.advance(Duration::from_secs(29)).is_empty());
    let fired = t.advance(Duration::from_secs(1));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].commands, [refund()]);
    // The held credit lands after all: it is taken back.
    let step = t.when_event("account-bob", credited());
    assert_eq!(
        step.commands,
        [(
            "bob".to_owned(),
            AccountCommand::TransferReverse {
                transfer: "t1".into(),
                amount: 500
            }
        )]
    );
    t.when_event(
        "account-ada",
        Observed::Refunded {
            transfer: "t1".into(),
            amount: 500,
        },
    );
    assert!(!t.state().is_finished(), "finished with a reversal pending");
    t.when_event(
        "account-bob",
        Observed::Reversed {
            transfer: "t1".into(),
            amount: 500,
        },
    );
    assert!(t.state().is_finished());
    // The credit seen again (a redelivery) reverses nothing twice.
    assert!(t.when_event("account-bob", credited()).decisions.is_empty());
}

#[test]
fn a_timeout_before_the_debit_abandons_and_a_late_debit_is_refunded() {
    let mut t = ProcessTest::<Transfer>::given([started()]);
    let fired = t.advance(Duration::from_secs(31));
    assert_eq!(fired[0].decisions, [TransferEvent::Abandoned]);
    assert!(t.state().is_finished());
    let step = t.when_event("account-ada", debited());
    assert_eq!(step.commands, [refund()]);
    assert!(!t.state().is_finished());
}

#[test]
fn a_refused_debit_ends_it_and_cancels_the_timeout() {
    let mut t = ProcessTest::<Transfer>::given([started()]);
    let debit = (
        "ada".to_owned(),
        AccountCommand::TransferDebit {
            transfer: "t1".into(),
            amount: 500,
        },
    );
    let step = t.when_rejected(debit, "insufficient funds");
    assert!(step.commands.is_empty() && t.state().is_finished() && t.timers().is_empty());
}
