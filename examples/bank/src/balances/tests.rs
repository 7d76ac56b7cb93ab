use annals_projections::testkit;

use super::*;

/// Ada opens, deposits and withdraws; Bob opens and closes.
fn history() -> Vec<(&'static str, AccountEvent)> {
    vec![
        (
            "account-ada",
            AccountEvent::Opened {
                owner: "Ada".into(),
                currency: "EUR".into(),
            },
        ),
        ("account-ada", AccountEvent::Deposited { amount: 500 }),
        (
            "account-bob",
            AccountEvent::Opened {
                owner: "Bob".into(),
                currency: "USD".into(),
            },
        ),
        ("account-ada", AccountEvent::Withdrawn { amount: 120 }),
        ("account-bob", AccountEvent::Closed),
    ]
}

#[tokio::test]
async fn given_account_events_the_balances_table_holds_one_row_per_account() {
    let read = testkit::given(AccountBalances::default(), history())
        .await
        .expect("projection ran");
    let ada: BalanceRow = read.row(TABLE, "ada").expect("row").expect("ada");
    assert_eq!(
        (
            ada.owner.as_str(),
            ada.balance,
            ada.status.as_str(),
            ada.events_applied
        ),
        ("Ada", 380, "open", 3)
    );
    assert!(ada.last_activity.is_some());
    let bob: BalanceRow = read.row(TABLE, "bob").expect("row").expect("bob");
    assert_eq!(
        (
            bob.currency.as_str(),
            bob.status.as_str(),
            bob.events_applied
        ),
        ("USD", "closed", 2)
    );
}

/// The same projection, on the backend it runs on in production: a throwaway database with
/// the migrations applied, no hand-written fixture.
#[tokio::test]
async fn on_postgres_the_same_events_give_the_same_rows() {
    let read = testkit::given_postgres(AccountBalances::default(), history())
        .await
        .expect("projection ran on Postgres");
    let rows = pg_rows(read.pool(), &["ada", "bob"])
        .await
        .expect("read account_balances");
    let memory = testkit::given(AccountBalances::default(), history())
        .await
        .expect("projection ran in memory");
    for (id, row) in &rows {
        let expected: BalanceRow = memory.row(TABLE, id).expect("row").expect("in memory too");
        assert_eq!(
            (&row.owner, row.balance, &row.status, row.events_applied),
            (
                &expected.owner,
                expected.balance,
                &expected.status,
                expected.events_applied
            ),
            "{id}"
        );
    }
    assert_eq!(rows.len(), 2, "one row per account: {rows:?}");
    read.drop_database().await;
}
