use annals_core::testkit::TestHarness;

use super::*;

fn opened() -> AccountEvent {
    AccountEvent::Opened {
        owner: "Ada".into(),
        currency: "EUR".into(),
    }
}

type Given = TestHarness<BankAccount>;

#[test]
fn opening_an_unopened_account() {
    let state = Given::given_no_events()
        .when(AccountCommand::Open {
            owner: "Ada".into(),
            currency: "EUR".into(),
        })
        .then([opened()]);
    assert_eq!(state.status, AccountStatus::Open);
}

#[test]
fn opening_twice_is_rejected() {
    Given::given([opened()])
        .when(AccountCommand::Open {
            owner: "Bob".into(),
            currency: "EUR".into(),
        })
        .then_error(BankError::AlreadyOpen);
}

#[test]
fn opening_needs_an_owner_and_a_currency() {
    Given::given_no_events()
        .when(AccountCommand::Open {
            owner: " ".into(),
            currency: "EUR".into(),
        })
        .then_error(BankError::InvalidDetails);
    Given::given_no_events()
        .when(AccountCommand::Open {
            owner: "Ada".into(),
            currency: "EURO".into(),
        })
        .then_error(BankError::InvalidDetails);
}

#[test]
fn deposit_adds_to_the_balance() {
    let state = Given::given([opened(), AccountEvent::Deposited { amount: 100 }])
        .when(AccountCommand::Deposit { amount: 50 })
        .then([AccountEvent::Deposited { amount: 50 }]);
    assert_eq!(state.balance, 150);
}

#[test]
fn non_positive_amounts_are_rejected() {
    Given::given([opened()])
        .when(AccountCommand::Deposit { amount: 0 })
        .then_error(BankError::NonPositiveAmount(0));
    Given::given([opened(), AccountEvent::Deposited { amount: 10 }])
        .when(AccountCommand::Withdraw { amount: -5 })
        .then_error(BankError::NonPositiveAmount(-5));
}

#[test]
fn withdrawal_within_the_balance() {
    let state = Given::given([opened(), AccountEvent::Deposited { amount: 100 }])
        .when(AccountCommand::Withdraw { amount: 100 })
        .then([AccountEvent::Withdrawn { amount: 100 }]);
    assert_eq!(state.balance, 0);
}

#[test]
fn withdrawal_beyond_the_balance_is_rejected() {
    Given::given([opened(), AccountEvent::Deposited { amount: 100 }])
        .when(AccountCommand::Withdraw { amount: 101 })
        .then_error(BankError::InsufficientFunds {
            balance: 100,
            requested: 101,
        });
}

#[test]
fn operations_on_an_unopened_account_are_rejected() {
    for command in [
        AccountCommand::Deposit { amount: 5 },
        AccountCommand::Withdraw { amount: 5 },
        AccountCommand::Close,
    ] {
        Given::given_no_events()
            .when(command)
            .then_error(BankError::NotOpened);
    }
}

#[test]
fn closing_an_empty_account() {
    let state = Given::given([opened()])
        .when(AccountCommand::Close)
        .then([AccountEvent::Closed]);
    assert_eq!(state.status, AccountStatus::Closed);
}

#[test]
fn closing_an_account_with_money_is_rejected() {
    Given::given([opened(), AccountEvent::Deposited { amount: 1 }])
        .when(AccountCommand::Close)
        .then_error(BankError::BalanceNotZero(1));
}

#[test]
fn operations_on_a_closed_account_are_rejected() {
    for command in [
        AccountCommand::Deposit { amount: 5 },
        AccountCommand::Withdraw { amount: 5 },
        AccountCommand::Close,
        AccountCommand::Open {
            owner: "Ada".into(),
            currency: "EUR".into(),
        },
    ] {
        Given::given([opened(), AccountEvent::Closed])
            .when(command)
            .then_error(BankError::Closed);
    }
}
