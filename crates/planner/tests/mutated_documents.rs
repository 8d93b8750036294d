//! Valid Omicron documents mutated at random, fed to everything that takes
//! a blueprint: parsing, validation, classification (for every Nexus zone
//! and a stranger), the quiesce check, the bump decision and the expunge
//! rule. None of them may panic, whatever the input. (A panic fails the
//! property; proptest would shrink it to the smallest mutation.)

use baton_planner::{
    classify, decide_generation_bump, expungeable_nexus_zones, is_quiescing,
};
use baton_test_utils::strategies::blueprint;
use baton_types::{NexusRecord, NexusRecordState, parse_blueprint};
use baton_uuid_kinds::OmicronZoneUuid;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use test_strategy::proptest;

/// One change to a document.
#[derive(Clone, Debug)]
enum Mutation {
    /// Cut a byte range out of the text.
    Delete(Index, Index),
    /// Put bytes in at a place.
    Insert(Index, Vec<u8>),
    /// Copy a byte range to another place.
    Duplicate(Index, Index, Index),
    /// Replace a JSON value (chosen by walking the tree) with another.
    Replace(Index, Value),
    /// Remove a key of an object.
    RemoveKey(Index),
    /// Set one of the document's numbers (generations, mostly) to an
    /// extreme.
    Number(Index, Value),
}

/// Values that break assumptions: wrong types, extreme numbers, strings
/// that are almost ids, empty containers.
fn nasty_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(i64::MAX)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(9_223_372_036_854_775_808u64)),
        Just(serde_json::json!(1e308)),
        Just(serde_json::json!(0.5)),
        (0u64..8).prop_map(|n| serde_json::json!(n)),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
    ]
}

fn nasty_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        nasty_number(),
        prop_oneof![
            Just("".to_owned()),
            Just("nexus".to_owned()),
            Just("expunged".to_owned()),
            Just("00000000-0000-0000-0000-00000000000g".to_owned()),
            "[a-z_]{0,12}",
        ]
        .prop_map(Value::String),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"kind": "expunged"})),
        Just(serde_json::json!({"type": "nexus"})),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Delete(a, b)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(a, b, c)| Mutation::Duplicate(a, b, c)),
        3 => (any::<Index>(), nasty_value()).prop_map(|(a, v)| Mutation::Replace(a, v)),
        2 => any::<Index>().prop_map(Mutation::RemoveKey),
        3 => (any::<Index>(), nasty_number()).prop_map(|(a, v)| Mutation::Number(a, v)),
    ]
}

/// Every value in the tree, depth first, as JSON pointers.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn apply(text: &str, mutation: &Mutation) -> Vec<u8> {
    let bytes = text.as_bytes();
    let at = |i: &Index| i.index(bytes.len() + 1);
    match mutation {
        Mutation::Delete(a, b) => {
            let (a, b) = (at(a).min(at(b)), at(a).max(at(b)));
            [&bytes[..a], &bytes[b..]].concat()
        }
        Mutation::Insert(a, new) => {
            let a = at(a);
            [&bytes[..a], new, &bytes[a..]].concat()
        }
        Mutation::Duplicate(a, b, c) => {
            let (a, b) = (at(a).min(at(b)), at(a).max(at(b)));
            let c = at(c);
            [&bytes[..c], &bytes[a..b], &bytes[c..]].concat()
        }
        Mutation::Replace(i, new) => edit_tree(text, i, |doc, target| {
            if let Some(slot) = doc.pointer_mut(target) {
                *slot = new.clone();
            }
        }),
        Mutation::Number(i, new) => {
            let mut doc: Value =
                serde_json::from_str(text).expect("valid to start");
            let mut all = Vec::new();
            pointers(&doc, String::new(), &mut all);
            let numbers: Vec<&String> = all
                .iter()
                .filter(|p| doc.pointer(p).is_some_and(Value::is_number))
                .collect();
            if let Some(p) =
                numbers.get(i.index(numbers.len().max(1))).copied().cloned()
                && let Some(slot) = doc.pointer_mut(&p)
            {
                *slot = new.clone();
            }
            serde_json::to_vec(&doc).expect("a value serializes")
        }
        Mutation::RemoveKey(i) => edit_tree(text, i, |doc, target| {
            if let Some((parent, key)) = target.rsplit_once('/')
                && let Some(Value::Object(map)) = doc.pointer_mut(parent)
            {
                map.remove(&key.replace("~1", "/").replace("~0", "~"));
            }
        }),
    }
}

/// Applies `f` to the value at a pointer chosen by `i` in the parsed tree.
fn edit_tree(
    text: &str,
    i: &Index,
    f: impl FnOnce(&mut Value, &str),
) -> Vec<u8> {
    let mut doc: Value = serde_json::from_str(text).expect("valid to start");
    let mut all = Vec::new();
    pointers(&doc, String::new(), &mut all);
    f(&mut doc, &all[i.index(all.len())]);
    serde_json::to_vec(&doc).expect("a value serializes")
}

/// Runs everything that takes a blueprint on `bytes`.
fn feed(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let Ok(bp) = parse_blueprint(&text) else {
        return;
    };
    let _ = bp.validate();
    let mut ids: Vec<OmicronZoneUuid> =
        bp.nexus_zones().map(|z| z.zone_id).collect();
    ids.push(OmicronZoneUuid::from_u128(0x5157_2a4e));
    let records: Vec<NexusRecord> = ids
        .iter()
        .zip(
            [
                NexusRecordState::Active,
                NexusRecordState::NotYet,
                NexusRecordState::Quiesced,
            ]
            .iter()
            .cycle(),
        )
        .map(|(&nexus_id, &state)| NexusRecord {
            nexus_id,
            state,
            last_drained_blueprint_id: None,
        })
        .collect();
    for id in ids {
        let _ = classify(&bp, id);
        let _ = is_quiescing(&bp, id);
    }
    let _ = decide_generation_bump(&bp, &records, 3);
    let _ = expungeable_nexus_zones(&bp, &records);
}

/// Cases in CI (the acceptance asks for at least 10,000); `cargo xtask
/// soak` multiplies them by `BATON_SOAK`.
fn cases() -> u32 {
    let soak = std::env::var("BATON_SOAK")
        .ok()
        .and_then(|v| v.parse().ok());
    10_000 * soak.unwrap_or(1)
}

#[proptest(cases = cases())]
fn no_mutated_document_makes_anything_panic(
    #[strategy(blueprint(3, 6))] original: baton_types::Blueprint,
    #[strategy(proptest::collection::vec(mutation(), 1..4))] mutations: Vec<
        Mutation,
    >,
) {
    let mut text = original.document().to_owned();
    for mutation in &mutations {
        let bytes = apply(&text, mutation);
        feed(&bytes);
        match String::from_utf8(bytes) {
            Ok(next) if serde_json::from_str::<Value>(&next).is_ok() => {
                text = next
            }
            // Later mutations work on the last document that was JSON.
            _ => {}
        }
    }
}
