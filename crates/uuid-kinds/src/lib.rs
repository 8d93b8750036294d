//! Typed UUIDs for every kind of id Baton handles.
//!
//! A `BlueprintUuid` can never be passed where an `OmicronZoneUuid` is
//! wanted: the kind is part of the type. This crate only declares kinds; it
//! holds no logic. Keep the list alphabetical and append-only, so that ids
//! keep their meaning across versions.
//!
//! The `proptest` feature implements proptest's `Arbitrary` for every
//! typed UUID. It is for tests only: `baton-test-utils` and
//! dev-dependencies enable it, never a shipped crate.
//!
//! ```
//! use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};
//!
//! let zone = OmicronZoneUuid::from_u128(7);
//! let untyped = zone.into_untyped_uuid();
//! assert_eq!(OmicronZoneUuid::from_untyped_uuid(untyped), zone);
//! ```

pub use newtype_uuid::{GenericUuid, TypedUuid, TypedUuidKind, TypedUuidTag};

macro_rules! impl_kinds {
    ($($kind:ident => $tag:literal, $alias:ident;)*) => {
        $(
            #[doc = concat!("Marker for UUIDs of kind `", $tag, "`.")]
            #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
            pub enum $kind {}

            impl TypedUuidKind for $kind {
                fn tag() -> TypedUuidTag {
                    const TAG: TypedUuidTag = TypedUuidTag::new($tag);
                    TAG
                }
            }

            #[doc = concat!("A typed UUID of kind `", $tag, "`.")]
            pub type $alias = TypedUuid<$kind>;
        )*
    };
}

impl_kinds! {
    BlueprintKind => "blueprint", BlueprintUuid;
    OmicronZoneKind => "omicron_zone", OmicronZoneUuid;
    SledKind => "sled", SledUuid;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_lowercase_hyphenated() {
        let id: OmicronZoneUuid =
            "F38B2FFC-80A4-4F5A-91C9-BC701E7EA419".parse().unwrap();
        assert_eq!(id.to_string(), "f38b2ffc-80a4-4f5a-91c9-bc701e7ea419");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"f38b2ffc-80a4-4f5a-91c9-bc701e7ea419\"");
    }

    #[test]
    fn kinds_have_distinct_tags() {
        let tags = [
            BlueprintKind::tag().as_str(),
            OmicronZoneKind::tag().as_str(),
            SledKind::tag().as_str(),
        ];
        let mut sorted = tags.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), tags.len(), "{tags:?}");
    }
}
