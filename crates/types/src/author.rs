//! Writing a child blueprint: the parent's Omicron document with Nexus
//! zones added, the Nexus generation bumped, or zones expunged.
//!
//! The child is written by editing the parent's *document*, not by
//! rendering the model: every field Baton does not read (disks, datasets,
//! addresses, images, DNS versions, ...) stays as the parent has it, in
//! the parent's order, so `diff parent child` shows only the edits. The
//! edits follow Omicron's conventions (see the README's "Writing
//! blueprints"):
//!
//! - a sled whose zones change gets its `sled_agent_generation` bumped by
//!   one, once per child, because that is the configuration the sled
//!   agent receives;
//! - a zone expunged in the child gets `as_of_generation` = its sled's
//!   `sled_agent_generation` *in the child* (the sled configuration
//!   generation in which it became expunged: a sled that has ledgered that
//!   generation will not start the zone again), as Omicron's planner does;
//!   marking an already expunged zone ready for cleanup keeps it and
//!   changes nothing the sled agent receives;
//! - a new Nexus zone copies the shape of an existing Nexus zone (its
//!   image, ports, external IP and NIC addresses), with fresh ids where
//!   ids must be unique (the zone, its external IP, its NIC), and its
//!   internal address allocated the way Omicron's planner does: the
//!   sled's `last_allocated_ip_subnet_offset` plus one, inside the sled's
//!   subnet.
//!
//! What the child may change is decided elsewhere (the planner says
//! whether a bump or an expungement is allowed); this module only makes
//! the edit and checks the result: the child must validate and follow its
//! parent ([`Blueprint::check_follows`]). It does no I/O: ids and the
//! time come from the caller.
//!
//! ```
//! use baton_types::ChildStamp;
//! use baton_types::story::HandoffStory;
//! use baton_uuid_kinds::BlueprintUuid;
//!
//! let story = HandoffStory::new(1);
//! let parent = &story.new_generation_deployed;
//! let mut draft = parent.draft_child().unwrap();
//! draft.bump_nexus_generation().unwrap();
//! let child = draft
//!     .finish(ChildStamp {
//!         id: BlueprintUuid::from_u128(9),
//!         time_created: chrono::Utc::now(),
//!         creator: "doc".into(),
//!         comment: None,
//!     })
//!     .unwrap();
//! assert_eq!(child.nexus_generation().get(), 2);
//! assert_eq!(child.parent_blueprint_id(), Some(parent.id()));
//! assert_eq!(child.comment(), "bump nexus_generation from 1 to 2");
//! ```

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use baton_uuid_kinds::{
    BlueprintUuid, GenericUuid, OmicronZoneUuid, SledUuid, TypedUuid,
    TypedUuidKind,
};
use chrono::{DateTime, SecondsFormat, Utc};

use crate::ordered::Json;
use crate::{
    Blueprint, Generation, NexusZoneRef, ReadError, SledState, SuccessionError,
    ZoneDisposition, parse_blueprint,
};

/// Where the ids of a child's new objects come from: random version-4
/// UUIDs in the command line, a seeded stream in tests.
pub trait FreshIds {
    /// A UUID (as its 128 bits) not used anywhere yet.
    fn fresh_u128(&mut self) -> u128;

    /// A fresh typed id.
    fn fresh<T: TypedUuidKind>(&mut self) -> TypedUuid<T>
    where
        Self: Sized,
    {
        TypedUuid::from_u128(self.fresh_u128())
    }
}

impl<F: FnMut() -> u128> FreshIds for F {
    fn fresh_u128(&mut self) -> u128 {
        self()
    }
}

/// What a child is stamped with when it is finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildStamp {
    /// The child's id.
    pub id: BlueprintUuid,
    /// When it was made (kept to the microsecond, as Omicron does).
    pub time_created: DateTime<Utc>,
    /// Who made it.
    pub creator: String,
    /// Why; `None` says what changed, from the edits made.
    pub comment: Option<String>,
}

/// Why a child could not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorError {
    /// The parent has no such sled.
    #[error("blueprint {blueprint_id} has no sled {sled_id}")]
    UnknownSled {
        /// The parent.
        blueprint_id: BlueprintUuid,
        /// The sled asked for.
        sled_id: SledUuid,
    },
    /// A zone was to be added to a decommissioned sled.
    #[error("sled {0} is decommissioned, so no zone can be added to it")]
    SledNotActive(SledUuid),
    /// No Nexus zone to copy the shape of a new one from.
    #[error(
        "blueprint {0} has no in-service Nexus zone to copy a new Nexus \
         zone's shape from"
    )]
    NoNexusToCopy(BlueprintUuid),
    /// A new Nexus zone more than one generation ahead of the blueprint.
    #[error(
        "generation {generation} is more than one above the blueprint's \
         nexus_generation {blueprint_generation}: a blueprint holds Nexus \
         zones at most one generation ahead of its own"
    )]
    GenerationTooFarAhead {
        /// The generation asked for.
        generation: Generation,
        /// The blueprint's top-level generation.
        blueprint_generation: Generation,
    },
    /// A new Nexus zone behind the generation the blueprint wants.
    #[error(
        "generation {generation} is below the blueprint's nexus_generation \
         {blueprint_generation}: a Nexus zone of an older generation never \
         gets a record"
    )]
    GenerationBehind {
        /// The generation asked for.
        generation: Generation,
        /// The blueprint's top-level generation.
        blueprint_generation: Generation,
    },
    /// A generation would pass the largest there is.
    #[error("{0} is already the largest generation possible")]
    GenerationExhausted(&'static str),
    /// The parent has no such zone.
    #[error("blueprint {blueprint_id} has no zone {zone_id}")]
    UnknownZone {
        /// The parent.
        blueprint_id: BlueprintUuid,
        /// The zone asked for.
        zone_id: OmicronZoneUuid,
    },
    /// The zone is already expunged as asked.
    #[error(
        "zone {0} is already expunged{ready}",
        ready = if *.1 { " and ready for cleanup" } else { "" }
    )]
    AlreadyExpunged(OmicronZoneUuid, bool),
    /// The sled's control-plane addresses are all allocated.
    #[error(
        "sled {0} has no control-plane address left to allocate \
         (last_allocated_ip_subnet_offset is at its largest)"
    )]
    SubnetFull(SledUuid),
    /// The parent's document lacks something the edit needs.
    #[error("the parent's document {0}")]
    Document(String),
    /// Nothing was changed, so there is no child to write.
    #[error("nothing to change: the child would equal its parent")]
    NothingChanged,
    /// The child would not be a valid blueprint.
    #[error("the child would be invalid: {0}")]
    Invalid(ReadError),
    /// The child would not follow its parent.
    #[error(transparent)]
    Succession(SuccessionError),
}

/// What expunging one zone did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expunged {
    /// The zone was in service and is now expunged, as of its sled's new
    /// configuration generation.
    Expunged {
        /// The sled's `sled_agent_generation` in the child.
        as_of_generation: u64,
    },
    /// The zone was expunged already; it is now ready for cleanup.
    MarkedReadyForCleanup,
}

/// A child of `parent` being written: the parent's document with the
/// edits made so far. Decisions (which sled, which template) read the
/// parent, so edits of one kind per child are the expected use.
#[derive(Clone, Debug)]
pub struct ChildDraft<'p> {
    parent: &'p Blueprint,
    doc: Json,
    nexus_generation: Generation,
    bumped_sleds: BTreeSet<SledUuid>,
    changes: Changes,
}

/// What a draft changed, for the child's default comment.
#[derive(Clone, Debug, Default)]
struct Changes {
    bumped: Option<(Generation, Generation)>,
    added: Vec<(OmicronZoneUuid, Generation)>,
    expunged: Vec<OmicronZoneUuid>,
    expunged_ready: Vec<OmicronZoneUuid>,
    marked_ready: Vec<OmicronZoneUuid>,
}

impl Changes {
    /// One phrase per kind of change, in a stable order.
    fn phrases(&self) -> Vec<String> {
        let ids = |zones: &[OmicronZoneUuid]| {
            zones
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut phrases = Vec::new();
        let mut generations: Vec<Generation> =
            self.added.iter().map(|(_, g)| *g).collect();
        generations.dedup();
        for generation in generations {
            let zones: Vec<_> = self
                .added
                .iter()
                .filter(|(_, g)| *g == generation)
                .map(|(z, _)| *z)
                .collect();
            phrases.push(format!(
                "add {} Nexus zone(s) at generation {generation}: {}",
                zones.len(),
                ids(&zones)
            ));
        }
        if let Some((from, to)) = self.bumped {
            phrases.push(format!("bump nexus_generation from {from} to {to}"));
        }
        if !self.expunged.is_empty() {
            phrases.push(format!("expunge {}", ids(&self.expunged)));
        }
        if !self.expunged_ready.is_empty() {
            phrases.push(format!(
                "expunge {}, ready for cleanup",
                ids(&self.expunged_ready)
            ));
        }
        if !self.marked_ready.is_empty() {
            phrases.push(format!(
                "mark {} ready for cleanup",
                ids(&self.marked_ready)
            ));
        }
        phrases
    }
}

impl Blueprint {
    /// Starts writing a child of this blueprint from its document.
    pub fn draft_child(&self) -> Result<ChildDraft<'_>, AuthorError> {
        let doc: Json = serde_json::from_str(self.document())
            .map_err(|e| AuthorError::Document(format!("is not JSON: {e}")))?;
        if !matches!(doc, Json::Object(_)) {
            return Err(AuthorError::Document("is not an object".into()));
        }
        Ok(ChildDraft {
            parent: self,
            doc,
            nexus_generation: self.nexus_generation(),
            bumped_sleds: BTreeSet::new(),
            changes: Changes::default(),
        })
    }
}

impl ChildDraft<'_> {
    /// What the edits so far changed, one phrase per kind of change
    /// (the child's default comment joins them).
    pub fn changes(&self) -> Vec<String> {
        self.changes.phrases()
    }

    /// Sets the top-level `nexus_generation` to the next one.
    pub fn bump_nexus_generation(&mut self) -> Result<Generation, AuthorError> {
        let from = self.nexus_generation;
        let to = from.next().map_err(|_| {
            AuthorError::GenerationExhausted("the blueprint's nexus_generation")
        })?;
        self.doc.set("nexus_generation", Json::from(to.get()));
        self.nexus_generation = to;
        let first = self.changes.bumped.map_or(from, |(first, _)| first);
        self.changes.bumped = Some((first, to));
        Ok(to)
    }

    /// Adds an in-service Nexus zone of `generation` on `sled_id`, shaped
    /// like an existing Nexus zone; returns its (fresh) id.
    pub fn add_nexus(
        &mut self,
        sled_id: SledUuid,
        generation: Generation,
        ids: &mut impl FreshIds,
    ) -> Result<OmicronZoneUuid, AuthorError> {
        let parent = self.parent;
        let sled =
            parent
                .sleds()
                .get(&sled_id)
                .ok_or(AuthorError::UnknownSled {
                    blueprint_id: parent.id(),
                    sled_id,
                })?;
        if sled.state != SledState::Active {
            return Err(AuthorError::SledNotActive(sled_id));
        }
        let top = self.nexus_generation;
        if generation < top {
            return Err(AuthorError::GenerationBehind {
                generation,
                blueprint_generation: top,
            });
        }
        if generation.get() > top.get() + 1 {
            return Err(AuthorError::GenerationTooFarAhead {
                generation,
                blueprint_generation: top,
            });
        }
        let template = template(parent, sled_id, generation)
            .ok_or(AuthorError::NoNexusToCopy(parent.id()))?;
        let (_, template_json) = self.zone_json(template.zone_id)?;
        let mut zone = template_json.clone();
        let zone_id: OmicronZoneUuid = ids.fresh();
        let external_ip_id = uuid_text(ids.fresh_u128());
        let nic_id = uuid_text(ids.fresh_u128());

        let sled_json = self.sled_json_mut(sled_id)?;
        let address = allocate_address(sled_id, sled_json)?;
        let pool = (template.sled_id != sled_id)
            .then(|| first_pool(sled_json))
            .flatten();

        zone.set("id", Json::string(zone_id.to_string()));
        zone.set("disposition", in_service());
        if let Some(pool) = pool {
            zone.set("filesystem_pool", pool);
        }
        let zone_type = zone
            .get_mut("zone_type")
            .ok_or_else(|| missing("a Nexus zone's zone_type"))?;
        let port = zone_type
            .get("internal_address")
            .and_then(Json::as_str)
            .and_then(|a| a.rsplit_once("]:"))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .unwrap_or(12221);
        zone_type.set(
            "internal_address",
            Json::string(format!("[{address}]:{port}")),
        );
        zone_type.set("nexus_generation", Json::from(generation.get()));
        if let Some(ip) = zone_type.get_mut("external_ip") {
            ip.set("id", Json::string(external_ip_id));
        }
        if let Some(nic) = zone_type.get_mut("nic") {
            nic.set("id", Json::string(nic_id));
            nic.set("name", Json::string(format!("nexus-{zone_id}")));
            if let Some(kind) = nic.get_mut("kind") {
                kind.set("id", Json::string(zone_id.to_string()));
            }
        }

        self.bump_sled_generation(sled_id)?;
        self.sled_json_mut(sled_id)?
            .get_mut("zones")
            .and_then(Json::as_array_mut)
            .ok_or_else(|| missing("sled's zones"))?
            .push(zone);
        self.changes.added.push((zone_id, generation));
        Ok(zone_id)
    }

    /// Expunges zone `zone_id` (any kind), or marks an expunged one ready
    /// for cleanup when `ready_for_cleanup` asks for it.
    pub fn expunge_zone(
        &mut self,
        zone_id: OmicronZoneUuid,
        ready_for_cleanup: bool,
    ) -> Result<Expunged, AuthorError> {
        let disposition = self
            .parent
            .zones()
            .find(|(_, z)| z.id == zone_id)
            .map(|(sled_id, z)| (sled_id, z.disposition))
            .ok_or(AuthorError::UnknownZone {
                blueprint_id: self.parent.id(),
                zone_id,
            })?;
        let done = match disposition {
            (sled_id, ZoneDisposition::InService) => {
                let as_of_generation = self.bump_sled_generation(sled_id)?;
                let (_, zone) = self.zone_json_mut(zone_id)?;
                zone.set(
                    "disposition",
                    expunged(as_of_generation, ready_for_cleanup),
                );
                Expunged::Expunged { as_of_generation }
            }
            (
                _,
                ZoneDisposition::Expunged {
                    as_of_generation,
                    ready_for_cleanup: false,
                },
            ) if ready_for_cleanup => {
                let (_, zone) = self.zone_json_mut(zone_id)?;
                zone.set("disposition", expunged(as_of_generation, true));
                Expunged::MarkedReadyForCleanup
            }
            (
                _,
                ZoneDisposition::Expunged {
                    ready_for_cleanup, ..
                },
            ) => {
                return Err(AuthorError::AlreadyExpunged(
                    zone_id,
                    ready_for_cleanup,
                ));
            }
        };
        match done {
            Expunged::Expunged { .. } if ready_for_cleanup => {
                self.changes.expunged_ready.push(zone_id)
            }
            Expunged::Expunged { .. } => self.changes.expunged.push(zone_id),
            Expunged::MarkedReadyForCleanup => {
                self.changes.marked_ready.push(zone_id)
            }
        }
        Ok(done)
    }

    /// Stamps the child, renders its document and reads it back: the
    /// child is returned only if it is valid and follows its parent.
    pub fn finish(self, stamp: ChildStamp) -> Result<Blueprint, AuthorError> {
        let phrases = self.changes.phrases();
        if phrases.is_empty() {
            return Err(AuthorError::NothingChanged);
        }
        let parent = self.parent;
        let comment = stamp.comment.unwrap_or_else(|| phrases.join("; "));
        let mut doc = self.doc;
        doc.set("id", Json::string(stamp.id.to_string()));
        doc.set("parent_blueprint_id", Json::string(parent.id().to_string()));
        doc.set(
            "time_created",
            Json::string(
                stamp
                    .time_created
                    .to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
        );
        doc.set("creator", Json::string(stamp.creator));
        doc.set("comment", Json::string(comment));
        let text =
            serde_json::to_string_pretty(&doc).expect("a JSON tree renders");
        let child = parse_blueprint(&text).map_err(AuthorError::Invalid)?;
        child
            .check_follows(parent)
            .map_err(AuthorError::Succession)?;
        Ok(child)
    }

    /// Bumps the sled's `sled_agent_generation`, once per child; returns
    /// the sled's generation in the child.
    fn bump_sled_generation(
        &mut self,
        sled_id: SledUuid,
    ) -> Result<u64, AuthorError> {
        let first = self.bumped_sleds.insert(sled_id);
        let sled = self.sled_json_mut(sled_id)?;
        let current = sled
            .get("sled_agent_generation")
            .and_then(Json::as_u64)
            .ok_or_else(|| missing("sled's sled_agent_generation"))?;
        if !first {
            return Ok(current);
        }
        let next = Generation::new(current)
            .and_then(Generation::next)
            .map_err(|_| {
                AuthorError::GenerationExhausted("a sled_agent_generation")
            })?;
        sled.set("sled_agent_generation", Json::from(next.get()));
        Ok(next.get())
    }

    fn sled_json_mut(
        &mut self,
        sled_id: SledUuid,
    ) -> Result<&mut Json, AuthorError> {
        self.doc
            .get_mut("sleds")
            .and_then(Json::members_mut)
            .and_then(|sleds| {
                sleds.iter_mut().find(|(key, _)| {
                    key.parse::<SledUuid>().ok() == Some(sled_id)
                })
            })
            .map(|(_, sled)| sled)
            .ok_or_else(|| missing(&format!("sled {sled_id}")))
    }

    fn zone_json(
        &self,
        zone_id: OmicronZoneUuid,
    ) -> Result<(SledUuid, &Json), AuthorError> {
        let sleds = match self.doc.get("sleds") {
            Some(Json::Object(sleds)) => sleds,
            _ => return Err(missing("sleds")),
        };
        for (key, sled) in sleds {
            let zones = sled.get("zones").and_then(Json::as_array);
            for zone in zones.unwrap_or_default() {
                if zone_id_of(zone) == Some(zone_id) {
                    let sled_id = key.parse().map_err(|_| {
                        AuthorError::Document(format!(
                            "has a sled key {key:?} that is not a UUID"
                        ))
                    })?;
                    return Ok((sled_id, zone));
                }
            }
        }
        Err(missing(&format!("zone {zone_id}")))
    }

    fn zone_json_mut(
        &mut self,
        zone_id: OmicronZoneUuid,
    ) -> Result<(SledUuid, &mut Json), AuthorError> {
        let (sled_id, _) = self.zone_json(zone_id)?;
        let zone = self
            .sled_json_mut(sled_id)?
            .get_mut("zones")
            .and_then(Json::as_array_mut)
            .and_then(|zones| {
                zones.iter_mut().find(|z| zone_id_of(z) == Some(zone_id))
            })
            .ok_or_else(|| missing(&format!("zone {zone_id}")))?;
        Ok((sled_id, zone))
    }
}

/// The Nexus zone a new one on `sled_id` at `generation` is shaped like:
/// in service, of the same generation if there is one (its image is the
/// new software), on the same sled if there is one (its pool is there),
/// else of the highest generation.
fn template(
    parent: &Blueprint,
    sled_id: SledUuid,
    generation: Generation,
) -> Option<NexusZoneRef> {
    parent.in_service_nexus_zones().max_by_key(|z| {
        (
            z.nexus_generation == generation,
            z.sled_id == sled_id,
            z.nexus_generation,
            std::cmp::Reverse(z.zone_id),
        )
    })
}

fn zone_id_of(zone: &Json) -> Option<OmicronZoneUuid> {
    zone.get("id")?.as_str()?.parse().ok()
}

/// The next control-plane address of the sled, as Omicron's planner
/// allocates it: one past `last_allocated_ip_subnet_offset`, inside the
/// sled's `/64` subnet. Records the new offset.
fn allocate_address(
    sled_id: SledUuid,
    sled: &mut Json,
) -> Result<Ipv6Addr, AuthorError> {
    let last = sled
        .get("last_allocated_ip_subnet_offset")
        .and_then(Json::as_u64)
        .ok_or_else(|| missing("sled's last_allocated_ip_subnet_offset"))?;
    let offset = last + 1;
    if offset > u64::from(u16::MAX) {
        return Err(AuthorError::SubnetFull(sled_id));
    }
    let net = sled
        .get("subnet")
        .and_then(|s| s.get("net"))
        .and_then(Json::as_str)
        .ok_or_else(|| missing("sled's subnet"))?;
    let base: Ipv6Addr = net
        .split_once('/')
        .map_or(net, |(addr, _)| addr)
        .parse()
        .map_err(|_| {
            AuthorError::Document(format!(
                "gives sled {sled_id} a subnet {net:?} that is not IPv6"
            ))
        })?;
    sled.set("last_allocated_ip_subnet_offset", Json::from(offset));
    Ok(Ipv6Addr::from(u128::from(base) + u128::from(offset)))
}

/// The `filesystem_pool` of the first zone on the sled that has one.
fn first_pool(sled: &Json) -> Option<Json> {
    sled.get("zones")?
        .as_array()?
        .iter()
        .find_map(|z| z.get("filesystem_pool"))
        .cloned()
}

fn uuid_text(raw: u128) -> String {
    OmicronZoneUuid::from_u128(raw)
        .into_untyped_uuid()
        .to_string()
}

fn in_service() -> Json {
    Json::object([("kind", Json::string("in_service"))])
}

fn expunged(as_of_generation: u64, ready_for_cleanup: bool) -> Json {
    Json::object([
        ("kind", Json::string("expunged")),
        ("as_of_generation", Json::from(as_of_generation)),
        ("ready_for_cleanup", Json::from(ready_for_cleanup)),
    ])
}

fn missing(what: &str) -> AuthorError {
    AuthorError::Document(format!("has no {what}"))
}
