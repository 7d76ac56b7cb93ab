use std::fmt;

use crate::{decode_event, encode_event, Aggregate, Encoding, Position, RecordedEvent, Upcasters};

/// Given/when/then tests for an aggregate, with no store.
///
/// `then` also checks that every produced event survives an encode/decode round trip
/// through the JSON codec, so a serde attribute that breaks persistence fails the test.
///
/// # Example
///
/// ```
/// # use annals_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)] struct Counter { value: u64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { #[serde(rename = "incremented")] Incremented { by: u64 } }
/// # impl DomainEvent for CounterEvent {}
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("zero")] struct Zero;
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = CounterEvent; type Error = Zero;
/// #     fn handle(&self, by: u64) -> Result<Vec<CounterEvent>, Zero> {
/// #         if by == 0 { Err(Zero) } else { Ok(vec![CounterEvent::Incremented { by }]) } }
/// #     fn apply(&mut self, CounterEvent::Incremented { by }: &CounterEvent) { self.value += by }
/// # }
/// use annals_core::testkit::TestHarness;
///
/// TestHarness::<Counter>::given([CounterEvent::Incremented { by: 1 }])
///     .when(2)
///     .then([CounterEvent::Incremented { by: 2 }]);
///
/// TestHarness::<Counter>::given_no_events().when(0).then_error(Zero);
/// ```
pub struct TestHarness<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> fmt::Debug for TestHarness<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestHarness")
            .field("aggregate", &A::TYPE)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> TestHarness<A> {
    /// Starts from the state these past events fold to.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for event in events {
            state.apply(&event);
        }
        Self { state }
    }

    /// Starts from the default state.
    pub fn given_no_events() -> Self {
        Self::given([])
    }

    /// Runs the command.
    pub fn when(self, command: A::Command) -> Outcome<A> {
        let result = self.state.handle(command);
        Outcome {
            state: self.state,
            result,
        }
    }
}

/// The result of [`TestHarness::when`], to assert on.
pub struct Outcome<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> fmt::Debug for Outcome<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Outcome<A> {
    /// The raw result.
    pub fn result(&self) -> &Result<Vec<A::Event>, A::Error> {
        &self.result
    }

    /// Asserts the command produced exactly `expected`, and that each event round-trips
    /// through the JSON codec; returns the state after applying them.
    ///
    /// # Panics
    ///
    /// When the command was rejected, produced other events, or an event does not
    /// round-trip.
    #[track_caller]
    pub fn then(mut self, expected: impl IntoIterator<Item = A::Event>) -> A
    where
        A::Event: PartialEq,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events {expected:?}, but the command was rejected: {e:?}"),
        };
        assert_eq!(events, expected, "the command produced other events");
        for event in &events {
            assert_round_trip(event);
            self.state.apply(event);
        }
        self.state
    }

    /// Asserts the command was rejected with `expected`.
    ///
    /// # Panics
    ///
    /// When the command succeeded or failed otherwise.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        match self.result {
            Ok(events) => {
                panic!("expected error {expected:?}, but the command produced {events:?}")
            }
            Err(e) => assert_eq!(e, expected, "the command failed with another error"),
        }
    }

    /// Asserts the command was rejected with an error matching `predicate`.
    ///
    /// # Panics
    ///
    /// When the command succeeded or the predicate returned false.
    #[track_caller]
    pub fn then_error_matches(self, predicate: impl FnOnce(&A::Error) -> bool) {
        match self.result {
            Ok(events) => panic!("expected an error, but the command produced {events:?}"),
            Err(e) => assert!(predicate(&e), "unexpected error: {e:?}"),
        }
    }
}

#[track_caller]
fn assert_round_trip<E: crate::DomainEvent + PartialEq>(event: &E) {
    let encoded = match encode_event(event, Encoding::Json) {
        Ok(encoded) => encoded,
        Err(e) => panic!("event {event:?} does not encode: {e}"),
    };
    let recorded = RecordedEvent {
        event_id: encoded.event_id,
        stream_id: "harness".to_owned(),
        stream_version: 1,
        position: Position::START,
        event_type: encoded.event_type,
        schema_version: encoded.schema_version,
        recorded_at: chrono::Utc::now(),
        metadata: encoded.metadata,
        encoding: encoded.encoding,
        payload: encoded.payload,
    };
    match decode_event::<E>(&recorded, &Upcasters::new()) {
        Ok(decoded) => assert_eq!(
            &decoded.payload, event,
            "event changed in an encode/decode round trip"
        ),
        Err(e) => panic!("event {event:?} does not decode after encoding: {e}"),
    }
}
