use annals_projections::testkit;

use super::*;

#[tokio::test]
async fn given_account_events_the_balances_table_holds_one_row_per_account() {
    let read = testkit::given(
        AccountBalances::default(),
        [
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
        ],
    )
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
