//! Verification of stored history against an event catalog: decodes what it knows, counts
//! what it does not, names the first failures, and samples when asked.

use annals_core::{
    catalog::{verify, Verify},
    encode_event, DomainEvent, Encoding, EventCatalog, EventStore, ExpectedVersion, NewEvent,
};
use annals_store_memory::MemoryEventStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Ev {
    #[serde(rename = "counted")]
    Counted { n: u64 },
}
impl DomainEvent for Ev {}

#[tokio::test]
async fn verify_counts_decodes_unknowns_and_failures() {
    let store = MemoryEventStore::new();
    for n in 0..10 {
        let event = encode_event(&Ev::Counted { n }, Encoding::Json).expect("encode");
        store
            .append_to_stream("c-1", ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
    }
    let corrupt = NewEvent::new("counted", 1, Encoding::Json, br#"{"n": "ten"}"#.to_vec());
    store
        .append_to_stream("c-2", ExpectedVersion::Any, vec![corrupt])
        .await
        .expect("append");
    for _ in 0..3 {
        let foreign = NewEvent::new("someone-elses", 1, Encoding::Json, b"{}".to_vec());
        store
            .append_to_stream("x-1", ExpectedVersion::Any, vec![foreign])
            .await
            .expect("append");
    }
    let catalog = EventCatalog::new().with::<Ev>();
    let mut pages = 0;
    let report = verify(&store, &catalog, &Verify::default(), |_, _| pages += 1)
        .await
        .expect("verify");
    assert_eq!(report.read, 14);
    assert_eq!(report.decoded.get("counted"), Some(&(10, 1)));
    assert_eq!(report.unknown.get("someone-elses"), Some(&3));
    assert_eq!(report.failed(), 1);
    assert_eq!(
        (
            report.failures[0].stream_id.as_str(),
            report.failures[0].stream_version
        ),
        ("c-2", 1)
    );
    assert!(pages >= 1);

    let sampled = verify(
        &store,
        &catalog,
        &Verify::default().sample_every(2),
        |_, _| {},
    )
    .await
    .expect("verify");
    let checked: u64 = sampled
        .decoded
        .values()
        .map(|(ok, failed)| ok + failed)
        .sum::<u64>()
        + sampled.unknown.values().sum::<u64>();
    assert_eq!((sampled.read, checked), (14, 7));
}
