//! The blueprint model: what the handoff needs from Omicron's blueprint.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};
use chrono::{DateTime, Utc};

use crate::Generation;
use crate::validate::{Outline, OutlineZone, ValidationError};

/// The desired configuration of the whole system, as one blueprint.
///
/// Fields are read through accessors so that the original document kept
/// beside them ([`Blueprint::document`]) can never disagree with them.
/// Equality compares the model, not the text of the document.
#[derive(Clone, Debug)]
pub struct Blueprint {
    id: BlueprintUuid,
    parent_blueprint_id: Option<BlueprintUuid>,
    nexus_generation: Generation,
    sleds: BTreeMap<SledUuid, SledConfig>,
    time_created: DateTime<Utc>,
    creator: String,
    comment: String,
    /// The original text, or one rendered on first use for a blueprint
    /// built in code (rendering is not free, and most never need it).
    document: OnceLock<Arc<str>>,
}

impl PartialEq for Blueprint {
    fn eq(&self, other: &Blueprint) -> bool {
        self.id == other.id
            && self.parent_blueprint_id == other.parent_blueprint_id
            && self.nexus_generation == other.nexus_generation
            && self.sleds == other.sleds
            && self.time_created == other.time_created
            && self.creator == other.creator
            && self.comment == other.comment
    }
}

impl Eq for Blueprint {}

/// One sled's part of a blueprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SledConfig {
    /// Whether the sled is in service.
    pub state: SledState,
    /// The zones on this sled, in document order.
    pub zones: Vec<ZoneConfig>,
}

/// Whether a sled is part of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SledState {
    /// The sled is in service.
    Active,
    /// The sled has been permanently removed.
    Decommissioned,
}

/// One zone in a blueprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The zone's id; for a Nexus zone this is the Nexus's identity.
    pub id: OmicronZoneUuid,
    /// In service, or expunged.
    pub disposition: ZoneDisposition,
    /// What runs in the zone.
    pub zone_type: ZoneType,
}

/// The desired state of a zone. Expungement is permanent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZoneDisposition {
    /// The zone is (or should be) running.
    InService,
    /// The zone is permanently gone.
    Expunged {
        /// The sled's `sled_agent_generation` in which the zone became
        /// expunged (Omicron's convention; `baton blueprint expunge`
        /// sets it so). Kept as written: no decision of Baton's reads
        /// it.
        as_of_generation: u64,
        /// True once the zone is known shut down for good, so its records
        /// may be deleted.
        ready_for_cleanup: bool,
    },
}

impl ZoneDisposition {
    /// True for an in-service zone.
    pub fn is_in_service(&self) -> bool {
        matches!(self, ZoneDisposition::InService)
    }

    /// True for an expunged zone whose records may now be removed.
    pub fn is_ready_for_cleanup(&self) -> bool {
        matches!(
            self,
            ZoneDisposition::Expunged {
                ready_for_cleanup: true,
                ..
            }
        )
    }
}

/// The Nexus-specific part of a Nexus zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NexusZone {
    /// The generation of Nexus this zone belongs to.
    pub nexus_generation: Generation,
}

/// What runs in a zone. Kinds Baton does not know are kept as `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the variants are Omicron's zone kinds, by name
pub enum ZoneType {
    BoundaryNtp,
    Clickhouse,
    ClickhouseKeeper,
    ClickhouseServer,
    CockroachDb,
    Crucible,
    CruciblePantry,
    ExternalDns,
    InternalDns,
    InternalNtp,
    Nexus(NexusZone),
    Oximeter,
    /// A zone kind this version of Baton does not know, by its `type` tag.
    Other(String),
}

/// The tags of the kinds Baton knows, except `nexus`, which carries data.
const SIMPLE_KINDS: [(&str, ZoneType); 11] = [
    ("boundary_ntp", ZoneType::BoundaryNtp),
    ("clickhouse", ZoneType::Clickhouse),
    ("clickhouse_keeper", ZoneType::ClickhouseKeeper),
    ("clickhouse_server", ZoneType::ClickhouseServer),
    ("cockroach_db", ZoneType::CockroachDb),
    ("crucible", ZoneType::Crucible),
    ("crucible_pantry", ZoneType::CruciblePantry),
    ("external_dns", ZoneType::ExternalDns),
    ("internal_dns", ZoneType::InternalDns),
    ("internal_ntp", ZoneType::InternalNtp),
    ("oximeter", ZoneType::Oximeter),
];

impl ZoneType {
    /// The `type` tag of this kind in Omicron's JSON.
    pub fn kind(&self) -> &str {
        match self {
            ZoneType::Nexus(_) => "nexus",
            ZoneType::Other(kind) => kind,
            simple => SIMPLE_KINDS
                .iter()
                .find(|(_, t)| t == simple)
                .map(|(tag, _)| *tag)
                .expect("every simple kind is listed"),
        }
    }

    /// The zone type for a non-Nexus `type` tag (unknown tags give `Other`).
    pub fn from_kind(kind: &str) -> ZoneType {
        SIMPLE_KINDS
            .iter()
            .find(|(tag, _)| *tag == kind)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| ZoneType::Other(kind.to_owned()))
    }

    /// Every kind Baton knows that carries no data, for generators.
    pub fn simple_kinds() -> impl Iterator<Item = ZoneType> {
        SIMPLE_KINDS.iter().map(|(_, t)| t.clone())
    }

    /// The Nexus generation, for a Nexus zone.
    pub fn nexus_generation(&self) -> Option<Generation> {
        match self {
            ZoneType::Nexus(nexus) => Some(nexus.nexus_generation),
            _ => None,
        }
    }
}

/// A Nexus zone as seen by the walk over a blueprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NexusZoneRef {
    /// The sled the zone is on.
    pub sled_id: SledUuid,
    /// The zone id (the Nexus identity).
    pub zone_id: OmicronZoneUuid,
    /// The zone's Nexus generation.
    pub nexus_generation: Generation,
    /// In service or expunged.
    pub disposition: ZoneDisposition,
}

impl Blueprint {
    /// The blueprint's id.
    pub fn id(&self) -> BlueprintUuid {
        self.id
    }

    /// The blueprint this one was derived from, if any.
    pub fn parent_blueprint_id(&self) -> Option<BlueprintUuid> {
        self.parent_blueprint_id
    }

    /// The Nexus generation the system wants in control.
    pub fn nexus_generation(&self) -> Generation {
        self.nexus_generation
    }

    /// The sleds, by id.
    pub fn sleds(&self) -> &BTreeMap<SledUuid, SledConfig> {
        &self.sleds
    }

    /// When the blueprint was made.
    pub fn time_created(&self) -> DateTime<Utc> {
        self.time_created
    }

    /// Who made it (for debugging).
    pub fn creator(&self) -> &str {
        &self.creator
    }

    /// Why it was made (for debugging).
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// The Omicron-format JSON document: the original text when the
    /// blueprint was read from one, unchanged.
    pub fn document(&self) -> &str {
        self.document
            .get_or_init(|| crate::document::render(self).into())
    }

    /// Every zone with the sled it is on, sleds in id order.
    pub fn zones(&self) -> impl Iterator<Item = (SledUuid, &ZoneConfig)> {
        self.sleds
            .iter()
            .flat_map(|(id, sled)| sled.zones.iter().map(move |z| (*id, z)))
    }

    /// Every Nexus zone, in service or not.
    pub fn nexus_zones(&self) -> impl Iterator<Item = NexusZoneRef> + '_ {
        self.zones().filter_map(|(sled_id, zone)| {
            Some(NexusZoneRef {
                sled_id,
                zone_id: zone.id,
                nexus_generation: zone.zone_type.nexus_generation()?,
                disposition: zone.disposition,
            })
        })
    }

    /// Every in-service Nexus zone: the one walk every caller uses.
    pub fn in_service_nexus_zones(
        &self,
    ) -> impl Iterator<Item = NexusZoneRef> + '_ {
        self.nexus_zones().filter(|z| z.disposition.is_in_service())
    }

    /// Checks the rules the handoff depends on, reporting every problem.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.outline().check(self.id)
    }

    fn outline(&self) -> Outline {
        Outline {
            parent: self.parent_blueprint_id,
            nexus_generation: self.nexus_generation.get(),
            zones: self
                .zones()
                .map(|(sled_id, zone)| OutlineZone {
                    sled_id,
                    zone_id: zone.id,
                    in_service: zone.disposition.is_in_service(),
                    nexus_generation: zone
                        .zone_type
                        .nexus_generation()
                        .map(Generation::get),
                })
                .collect(),
            problems: crate::validate::text_problems(
                &self.creator,
                &self.comment,
            ),
        }
    }
}

/// Builds a [`Blueprint`] in code, with an Omicron-format document
/// generated to match.
#[derive(Clone, Debug)]
pub struct BlueprintBuilder {
    id: BlueprintUuid,
    parent_blueprint_id: Option<BlueprintUuid>,
    nexus_generation: Generation,
    sleds: BTreeMap<SledUuid, SledConfig>,
    time_created: DateTime<Utc>,
    creator: String,
    comment: String,
}

impl BlueprintBuilder {
    /// A blueprint with no sleds.
    pub fn new(id: BlueprintUuid, nexus_generation: Generation) -> Self {
        BlueprintBuilder {
            id,
            parent_blueprint_id: None,
            nexus_generation,
            sleds: BTreeMap::new(),
            time_created: DateTime::UNIX_EPOCH,
            creator: "baton".to_owned(),
            comment: String::new(),
        }
    }

    /// A child of `parent`: the same sleds and generation, a new id.
    pub fn child_of(parent: &Blueprint, id: BlueprintUuid) -> Self {
        BlueprintBuilder {
            parent_blueprint_id: Some(parent.id),
            sleds: parent.sleds.clone(),
            time_created: parent.time_created,
            ..BlueprintBuilder::new(id, parent.nexus_generation)
        }
    }

    /// Sets the parent.
    pub fn parent(mut self, parent: Option<BlueprintUuid>) -> Self {
        self.parent_blueprint_id = parent;
        self
    }

    /// Sets the blueprint's Nexus generation.
    pub fn nexus_generation(mut self, generation: Generation) -> Self {
        self.nexus_generation = generation;
        self
    }

    /// Sets the creation time.
    pub fn time_created(mut self, time: DateTime<Utc>) -> Self {
        self.time_created = time;
        self
    }

    /// Sets the creator.
    pub fn creator(mut self, creator: impl Into<String>) -> Self {
        self.creator = creator.into();
        self
    }

    /// Sets the comment.
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = comment.into();
        self
    }

    /// Adds or replaces a sled.
    pub fn sled(mut self, id: SledUuid, config: SledConfig) -> Self {
        self.sleds.insert(id, config);
        self
    }

    /// Replaces every sled.
    pub fn sleds(mut self, sleds: BTreeMap<SledUuid, SledConfig>) -> Self {
        self.sleds = sleds;
        self
    }

    /// The sleds, to change zones in place (expunge, add).
    pub fn sleds_mut(&mut self) -> &mut BTreeMap<SledUuid, SledConfig> {
        &mut self.sleds
    }

    /// Builds the blueprint and its document. It is not validated: call
    /// [`Blueprint::validate`] when that matters.
    pub fn build(self) -> Blueprint {
        self.build_with(OnceLock::new())
    }

    /// Builds a blueprint read from `document`, keeping the text.
    pub(crate) fn build_from_document(self, document: &str) -> Blueprint {
        self.build_with(OnceLock::from(Arc::from(document)))
    }

    fn build_with(self, document: OnceLock<Arc<str>>) -> Blueprint {
        Blueprint {
            id: self.id,
            parent_blueprint_id: self.parent_blueprint_id,
            nexus_generation: self.nexus_generation,
            sleds: self.sleds,
            time_created: self.time_created,
            creator: self.creator,
            comment: self.comment,
            document,
        }
    }
}
