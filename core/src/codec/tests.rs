use serde::{Deserialize, Serialize};

use super::*;
use crate::{Metadata, Position};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Ev {
    #[serde(rename = "deposited")]
    Deposited { amount: u64 },
    #[serde(rename = "renamed")]
    Renamed(String),
    #[serde(rename = "closed")]
    Closed,
}
impl DomainEvent for Ev {}

fn recorded(event: NewEvent) -> RecordedEvent {
    RecordedEvent {
        event_id: event.event_id,
        stream_id: "account-1".into(),
        stream_version: 7,
        position: Position::new(3, 9),
        event_type: event.event_type,
        schema_version: event.schema_version,
        recorded_at: chrono::Utc::now(),
        metadata: Metadata::default(),
        encoding: event.encoding,
        payload: event.payload,
    }
}

fn raw(event_type: &str, schema_version: u32, payload: &str) -> RecordedEvent {
    recorded(NewEvent::new(
        event_type,
        schema_version,
        Encoding::Json,
        payload.as_bytes().to_vec(),
    ))
}

#[test]
fn every_variant_shape_round_trips_in_both_encodings() {
    for encoding in [Encoding::Json, Encoding::Postcard] {
        for event in [
            Ev::Deposited { amount: 5 },
            Ev::Renamed("x".into()),
            Ev::Closed,
        ] {
            let encoded = encode_event(&event, encoding).expect("encode");
            assert_eq!(Some(encoded.event_type.clone()), event_type_of(&event).ok());
            let decoded =
                decode_event::<Ev>(&recorded(encoded), &Upcasters::new()).expect("decode");
            assert_eq!(decoded.payload, event, "{encoding:?}");
            assert_eq!(decoded.stream_version, 7);
        }
    }
}

#[test]
fn json_payload_is_the_variant_content_alone() {
    let encoded = encode_event(&Ev::Closed, Encoding::Json).expect("encode");
    assert_eq!(
        (encoded.event_type.as_str(), encoded.payload.as_slice()),
        ("closed", &b"null"[..])
    );
    let encoded = encode_event(&Ev::Renamed("a\"b".into()), Encoding::Json).expect("encode");
    assert_eq!(encoded.payload, br#""a\"b""#);
}

#[test]
fn unknown_event_type_is_a_typed_error_naming_the_event() {
    let err = decode_event::<Ev>(&raw("frozen", 1, "{}"), &Upcasters::new()).unwrap_err();
    match err {
        Error::UnknownEventType {
            event_type,
            stream_id,
            stream_version,
            position,
        } => {
            assert_eq!(
                (event_type.as_str(), stream_id.as_str(), stream_version),
                ("frozen", "account-1", 7)
            );
            assert_eq!(position, Position::new(3, 9));
        }
        other => panic!("expected UnknownEventType, got {other}"),
    }
}

#[test]
fn corrupt_payload_is_a_decode_error_naming_the_event() {
    for payload in [r#"{"amount":"lots"}"#, "{", r#"{"wrong":1}"#] {
        let err = decode_event::<Ev>(&raw("deposited", 1, payload), &Upcasters::new()).unwrap_err();
        assert!(
            matches!(&err, Error::Decode { event_type, stream_id, stream_version: 7, .. }
                if event_type == "deposited" && stream_id == "account-1"),
            "{payload}: {err}"
        );
        assert!(
            err.to_string().contains("account-1"),
            "message names the stream: {err}"
        );
    }
    let mut bad =
        recorded(encode_event(&Ev::Deposited { amount: 1 }, Encoding::Postcard).expect("encode"));
    bad.payload = vec![0xff, 0xff];
    assert!(matches!(
        decode_event::<Ev>(&bad, &Upcasters::new()),
        Err(Error::Decode { .. })
    ));
}

#[test]
fn upcasters_chain_from_old_versions() {
    let upcasters = Upcasters::new()
        .json("deposited", 1, |v| {
            Ok(serde_json::json!({ "cents": v["euros"].as_u64().unwrap_or(0) * 100 }))
        })
        .json("deposited", 2, |mut v| {
            Ok(serde_json::json!({ "amount": v["cents"].take() }))
        });
    let v1 = decode_event::<Ev>(&raw("deposited", 1, r#"{"euros":3}"#), &upcasters).expect("v1");
    assert_eq!(
        (v1.payload, v1.schema_version),
        (Ev::Deposited { amount: 300 }, 3)
    );
    let v2 = decode_event::<Ev>(&raw("deposited", 2, r#"{"cents":7}"#), &upcasters).expect("v2");
    assert_eq!(v2.payload, Ev::Deposited { amount: 7 });
    let v3 = decode_event::<Ev>(&raw("deposited", 3, r#"{"amount":9}"#), &upcasters).expect("v3");
    assert_eq!(v3.payload, Ev::Deposited { amount: 9 });
}

#[test]
fn failing_upcaster_is_a_typed_error() {
    let upcasters = Upcasters::new().json("deposited", 1, |_| Err("no euros field".into()));
    let err = decode_event::<Ev>(&raw("deposited", 1, "{}"), &upcasters).unwrap_err();
    assert!(
        matches!(&err, Error::Upcast { from_version: 1, message, .. } if message == "no euros field"),
        "{err}"
    );
    let mut binary =
        recorded(encode_event(&Ev::Deposited { amount: 1 }, Encoding::Postcard).expect("encode"));
    binary.schema_version = 1;
    let err = decode_event::<Ev>(&binary, &upcasters).unwrap_err();
    assert!(matches!(err, Error::Upcast { .. }), "{err}");
}

#[test]
fn events_that_are_not_externally_tagged_enums_are_refused() {
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Internal {
        A { x: u8 },
    }
    impl DomainEvent for Internal {}
    let err = encode_event(&Internal::A { x: 1 }, Encoding::Json).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err}");
}

#[test]
fn structs_and_newtypes_that_look_tagged_are_refused() {
    #[derive(Debug, Serialize, Deserialize)]
    struct OneField {
        amount: u64,
    }
    impl DomainEvent for OneField {}
    #[derive(Debug, Serialize, Deserialize)]
    struct Name(String);
    impl DomainEvent for Name {}
    assert!(matches!(
        encode_event(&OneField { amount: 1 }, Encoding::Json),
        Err(Error::Encode { .. })
    ));
    assert!(matches!(
        encode_event(&Name("deposited".into()), Encoding::Json),
        Err(Error::Encode { .. })
    ));
}

#[test]
fn json_validation_rejects_garbage() {
    assert!(Encoding::Json.validate(b"{\"a\":1}").is_ok());
    assert!(matches!(
        Encoding::Json.validate(b"{nope"),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        Encoding::from_name(Encoding::Postcard.name()),
        Some(Encoding::Postcard)
    );
}
