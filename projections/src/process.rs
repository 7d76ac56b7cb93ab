//! Process managers (sagas, orchestration): a business process across several aggregates,
//! run as steps, with compensation when a step is refused.
//!
//! A [`ProcessManager`] is as pure as an aggregate: given its state and an [`Input`] (an
//! event from the log it reacts to, or the refusal of a command it sent) it decides events
//! that record its decisions, in its own stream `"{TYPE}-{instance}"`; its state is their
//! fold, and the commands to send follow from each recorded decision
//! ([`commands`](ProcessManager::commands)). No I/O in it.
//!
//! The runtime ([`ProcessRuntime`]) is a kind of subscription: it reads the log in order
//! under the subscription core's checkpoint and lease, records each decision exactly once
//! (through [`Repository::execute_once`](annals_core::Repository::execute_once), keyed by
//! the input), and dispatches the decision's commands through the application's
//! [`Dispatcher`] with ids derived from the decision, so that a dispatch repeated after a
//! crash is recognised by the target (`execute_once` again) and never applied twice. A
//! command the target refuses comes back as [`Input::Rejected`]: that is where
//! compensation starts. Two inputs for one instance are decided one after the other
//! (optimistic concurrency on its stream), never both against the same state.
//!
//! A refusal the process manager decided on is final: when a decision is replayed after a
//! crash, a command whose refusal is recorded is not dispatched again (the target might
//! accept it now, on top of the compensation already decided); the refusal's own decision
//! is replayed instead. A refusal it decided nothing on leaves no record: the command may
//! be dispatched again and apply, which the process then sees as it would have.

mod runtime;

use std::time::Duration;

use annals_core::{DomainEvent, Envelope};
use serde::{de::DeserializeOwned, Serialize};

pub use runtime::{DispatchError, Dispatched, Dispatcher, ProcessRuntime};

/// What a recorded decision does to the instance's durable timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerChange {
    /// Sets (or moves) the timer `name` to fire `after` this long.
    Set {
        /// The timer's name.
        name: String,
        /// How long from the decision.
        after: Duration,
    },
    /// Cancels the timer `name`.
    Cancel {
        /// The timer's name.
        name: String,
    },
}

/// What a process manager decides on.
#[derive(Clone, Debug, PartialEq)]
// One value per decision, moved once: boxing the event would cost more than its size.
#[allow(clippy::large_enum_variant)]
pub enum Input<E, C> {
    /// An event from the log, of a type it reacts to.
    Event(Envelope<E>),
    /// A command it dispatched was refused by its target.
    Rejected {
        /// The command.
        command: C,
        /// The target's reason.
        reason: String,
    },
    /// A timer it set fired (at least once, never before its time; it may fire after the
    /// instance moved on: decide nothing then).
    Timer {
        /// The timer's name.
        name: String,
    },
}

/// A business process across aggregates, decided step by step; see the [module](self).
pub trait ProcessManager: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Persisted name: prefixes its instances' streams and names its subscription. Never
    /// derive it from a Rust type path.
    const TYPE: &'static str;

    /// The log events it reacts to (an enum whose serde variant names are event types).
    type Observed: DomainEvent + Clone;

    /// Its decisions, recorded in the instance's stream.
    type Event: DomainEvent + Clone;

    /// The commands it sends to aggregates.
    type Command: Clone + std::fmt::Debug + Send + Sync + 'static;

    /// The instance an event belongs to; `None` ignores the event.
    fn instance(event: &Envelope<Self::Observed>) -> Option<String>;

    /// Decides, from the instance's state, what an input means: the decisions to record
    /// (none: the input changes nothing, for example a late or repeated one).
    fn decide(&self, input: &Input<Self::Observed, Self::Command>) -> Vec<Self::Event>;

    /// Folds one recorded decision into the state.
    fn apply(&mut self, decision: &Self::Event);

    /// The commands a recorded decision sends, in order. A decision carries what its
    /// commands need: they follow from it alone.
    fn commands(decision: &Self::Event) -> Vec<Self::Command>;

    /// The timers a recorded decision sets or cancels. Default: none.
    fn timers(decision: &Self::Event) -> Vec<TimerChange> {
        let _ = decision;
        Vec::new()
    }

    /// Whether the instance has finished (status counts the open ones). Default: never.
    fn is_finished(&self) -> bool {
        false
    }
}
