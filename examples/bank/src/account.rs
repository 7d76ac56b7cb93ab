use annals_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Amounts are in minor units (cents), so money never goes through floating point.
pub type Cents = i64;

/// Where an account is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountStatus {
    /// Never opened.
    #[default]
    Unopened,
    /// Open for business.
    Open,
    /// Closed for good.
    Closed,
}

/// A bank account, rebuilt from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BankAccount {
    /// Account holder.
    pub owner: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Current balance in cents.
    pub balance: Cents,
    /// Lifecycle state.
    pub status: AccountStatus,
}

/// What a caller can ask of an account.
#[derive(Clone, Debug, PartialEq)]
pub enum AccountCommand {
    /// Open the account.
    Open {
        /// Account holder.
        owner: String,
        /// ISO 4217 currency code.
        currency: String,
    },
    /// Add money.
    Deposit {
        /// Amount in cents.
        amount: Cents,
    },
    /// Take money out.
    Withdraw {
        /// Amount in cents.
        amount: Cents,
    },
    /// Close the account (its balance must be zero).
    Close,
    /// A transfer's first leg: take `amount` out (refused like a withdrawal).
    TransferDebit {
        /// The transfer.
        transfer: String,
        /// Amount in cents.
        amount: Cents,
    },
    /// A transfer's second leg: put `amount` in (refused when the account is not open or
    /// holds another currency).
    TransferCredit {
        /// The transfer.
        transfer: String,
        /// Amount in cents.
        amount: Cents,
        /// The source account's currency.
        currency: String,
    },
    /// Compensation: give a transfer's debit back. Never refused (a compensation must
    /// succeed): it lands on a closed account too.
    TransferRefund {
        /// The transfer.
        transfer: String,
        /// Amount in cents.
        amount: Cents,
    },
    /// Compensation: take back a transfer's credit that landed after the transfer was
    /// given up. Never refused; the balance may go negative.
    TransferReverse {
        /// The transfer.
        transfer: String,
        /// Amount in cents.
        amount: Cents,
    },
}

/// What happened to an account. The serde names are the persisted event types.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AccountEvent {
    /// The account was opened.
    #[serde(rename = "account-opened")]
    Opened {
        /// Account holder.
        owner: String,
        /// ISO 4217 currency code.
        currency: String,
    },
    /// Money came in.
    #[serde(rename = "money-deposited")]
    Deposited {
        /// Amount in cents.
        amount: Cents,
    },
    /// Money went out.
    #[serde(rename = "money-withdrawn")]
    Withdrawn {
        /// Amount in cents.
        amount: Cents,
    },
    /// The account was closed.
    #[serde(rename = "account-closed")]
    Closed,
    /// A transfer took money out.
    #[serde(rename = "transfer-debited")]
    TransferDebited {
        /// The transfer.
        transfer: String,
        /// Amount in cents.
        amount: Cents,
        /// The account's currency (the credit must match it).
        currency: String,
    },
    /// A transfer put money in.
    #[serde(rename = "transfer-credited")]
    TransferCredited {
        /// The transfer.
        transfer: String,
        /// Amount in cents.
        amount: Cents,
    },
    /// A transfer's debit was given back.
    #[serde(rename = "transfer-refunded")]
    TransferRefunded {
        /// The transfer.
        transfer: String,
        /// Amount in cents.
        amount: Cents,
    },
    /// A transfer's late credit was taken back.
    #[serde(rename = "transfer-reversed")]
    TransferReversed {
        /// The transfer.
        transfer: String,
        /// Amount in cents.
        amount: Cents,
    },
}

impl AccountEvent {
    /// How the event changes the balance.
    pub fn balance_change(&self) -> Cents {
        match self {
            AccountEvent::Deposited { amount }
            | AccountEvent::TransferCredited { amount, .. }
            | AccountEvent::TransferRefunded { amount, .. } => *amount,
            AccountEvent::Withdrawn { amount }
            | AccountEvent::TransferDebited { amount, .. }
            | AccountEvent::TransferReversed { amount, .. } => -amount,
            AccountEvent::Opened { .. } | AccountEvent::Closed => 0,
        }
    }
}

impl DomainEvent for AccountEvent {}

/// Why the bank said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// Deposits and withdrawals must be positive.
    #[error("amount must be positive, got {0}")]
    NonPositiveAmount(Cents),
    /// Not enough money for the withdrawal.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        /// Current balance.
        balance: Cents,
        /// Requested withdrawal.
        requested: Cents,
    },
    /// The account was never opened.
    #[error("the account is not open")]
    NotOpened,
    /// The account is already open.
    #[error("the account is already open")]
    AlreadyOpen,
    /// The account is closed.
    #[error("the account is closed")]
    Closed,
    /// Only an empty account can be closed.
    #[error("cannot close an account holding {0}")]
    BalanceNotZero(Cents),
    /// Owner or currency missing.
    #[error("owner and a 3-letter currency are required")]
    InvalidDetails,
    /// A transfer in another currency.
    #[error("the account holds {account}, the transfer is in {transfer}")]
    CurrencyMismatch {
        /// The account's currency.
        account: String,
        /// The transfer's.
        transfer: String,
    },
}

impl BankAccount {
    /// Checks that `amount` can be taken out (open, positive, covered).
    fn take(&self, amount: Cents) -> Result<Cents, BankError> {
        self.ensure_open()?;
        let amount = positive(amount)?;
        if amount > self.balance {
            return Err(BankError::InsufficientFunds {
                balance: self.balance,
                requested: amount,
            });
        }
        Ok(amount)
    }

    fn ensure_open(&self) -> Result<(), BankError> {
        match self.status {
            AccountStatus::Open => Ok(()),
            AccountStatus::Unopened => Err(BankError::NotOpened),
            AccountStatus::Closed => Err(BankError::Closed),
        }
    }
}

fn positive(amount: Cents) -> Result<Cents, BankError> {
    if amount > 0 {
        Ok(amount)
    } else {
        Err(BankError::NonPositiveAmount(amount))
    }
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = BankError;

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, BankError> {
        match command {
            AccountCommand::Open { owner, currency } => {
                match self.status {
                    AccountStatus::Unopened => {}
                    AccountStatus::Open => return Err(BankError::AlreadyOpen),
                    AccountStatus::Closed => return Err(BankError::Closed),
                }
                if owner.trim().is_empty() || currency.len() != 3 {
                    return Err(BankError::InvalidDetails);
                }
                Ok(vec![AccountEvent::Opened { owner, currency }])
            }
            AccountCommand::Deposit { amount } => {
                self.ensure_open()?;
                Ok(vec![AccountEvent::Deposited {
                    amount: positive(amount)?,
                }])
            }
            AccountCommand::Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn {
                amount: self.take(amount)?,
            }]),
            AccountCommand::Close => {
                self.ensure_open()?;
                if self.balance != 0 {
                    return Err(BankError::BalanceNotZero(self.balance));
                }
                Ok(vec![AccountEvent::Closed])
            }
            AccountCommand::TransferDebit { transfer, amount } => {
                Ok(vec![AccountEvent::TransferDebited {
                    transfer,
                    amount: self.take(amount)?,
                    currency: self.currency.clone(),
                }])
            }
            AccountCommand::TransferCredit {
                transfer,
                amount,
                currency,
            } => {
                self.ensure_open()?;
                if currency != self.currency {
                    return Err(BankError::CurrencyMismatch {
                        account: self.currency.clone(),
                        transfer: currency,
                    });
                }
                Ok(vec![AccountEvent::TransferCredited {
                    transfer,
                    amount: positive(amount)?,
                }])
            }
            AccountCommand::TransferRefund { transfer, amount } => {
                Ok(vec![AccountEvent::TransferRefunded { transfer, amount }])
            }
            AccountCommand::TransferReverse { transfer, amount } => {
                Ok(vec![AccountEvent::TransferReversed { transfer, amount }])
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner, currency } => {
                self.owner.clone_from(owner);
                self.currency.clone_from(currency);
                self.status = AccountStatus::Open;
            }
            AccountEvent::Closed => self.status = AccountStatus::Closed,
            other => self.balance += other.balance_change(),
        }
    }
}

#[cfg(test)]
mod tests;
