//! Rendering a blueprint built in code as an Omicron-format document.
//!
//! The output has every field the published schema requires for the zone
//! kinds Baton knows (an `Other` kind gets only an address), with values
//! derived from the ids (so the same blueprint always renders the same
//! text). Baton reads back only what the model holds; the rest is there so
//! that other tools accept the document.

use serde_json::{Value, json};

use crate::{Blueprint, SledState, ZoneConfig, ZoneDisposition, ZoneType};

pub(crate) fn render(blueprint: &Blueprint) -> String {
    let sleds: serde_json::Map<String, Value> = blueprint
        .sleds()
        .iter()
        .enumerate()
        .map(|(index, (id, sled))| {
            let subnet = format!("fd00:1122:3344:{:x}", 0x100 + index);
            let zones: Vec<Value> = sled
                .zones
                .iter()
                .enumerate()
                .map(|(i, zone)| render_zone(zone, &subnet, 0x20 + i))
                .collect();
            let sled = json!({
                "state": match sled.state {
                    SledState::Active => "active",
                    SledState::Decommissioned => "decommissioned",
                },
                "update_disposition": {
                    "generation": 1,
                    "kind": { "availability": "available" },
                },
                "subnet": { "net": format!("{subnet}::/64") },
                "last_allocated_ip_subnet_offset": 0x20 + sled.zones.len(),
                "sled_agent_generation": 1,
                "disks": [],
                "datasets": [],
                "remove_mupdate_override": null,
                "host_phase_2": {
                    "slot_a": { "type": "current_contents" },
                    "slot_b": { "type": "current_contents" },
                },
                "measurements": { "type": "install_dataset" },
                "zones": zones,
            });
            (id.to_string(), sled)
        })
        .collect();
    let document = json!({
        "id": blueprint.id(),
        "parent_blueprint_id": blueprint.parent_blueprint_id(),
        "nexus_generation": blueprint.nexus_generation(),
        "time_created": blueprint.time_created(),
        "creator": blueprint.creator(),
        "comment": blueprint.comment(),
        "sleds": sleds,
        "pending_mgs_updates": { "by_baseboard": [] },
        "internal_dns_version": 1,
        "external_dns_version": 1,
        "target_release_minimum_generation": 1,
        "external_networking_generation": 1,
        "cockroachdb_fingerprint": "",
        "cockroachdb_setting_preserve_downgrade": { "action": "do_not_modify" },
        "clickhouse_cluster_config": null,
        "oximeter_read_mode": { "type": "single_node" },
        "oximeter_read_version": 1,
        "source": { "source": "test" },
    });
    serde_json::to_string_pretty(&document).expect("a JSON value renders")
}

fn render_zone(zone: &ZoneConfig, subnet: &str, host: usize) -> Value {
    let pool = format!("oxp_{}", zone.id);
    let ip = format!("{subnet}::{host:x}");
    let disposition = match zone.disposition {
        ZoneDisposition::InService => json!({ "kind": "in_service" }),
        ZoneDisposition::Expunged {
            as_of_generation,
            ready_for_cleanup,
        } => {
            json!({
                "kind": "expunged",
                "as_of_generation": as_of_generation,
                "ready_for_cleanup": ready_for_cleanup,
            })
        }
    };
    json!({
        "id": zone.id,
        "disposition": disposition,
        "filesystem_pool": pool,
        "zone_type": render_zone_type(zone, &ip, &pool),
        "image_source": { "type": "install_dataset" },
    })
}

fn render_zone_type(zone: &ZoneConfig, ip: &str, pool: &str) -> Value {
    let dataset = json!({ "pool_name": pool });
    let mut value = match &zone.zone_type {
        ZoneType::Nexus(nexus) => json!({
            "internal_address": format!("[{ip}]:12221"),
            "lockstep_port": 12232,
            "external_ip": { "id": zone.id, "ip": "192.0.2.10" },
            "nic": nic(zone),
            "external_tls": false,
            "external_dns_servers": [],
            "nexus_generation": nexus.nexus_generation,
        }),
        ZoneType::Crucible
        | ZoneType::CockroachDb
        | ZoneType::Clickhouse
        | ZoneType::ClickhouseKeeper
        | ZoneType::ClickhouseServer => json!({
            "address": format!("[{ip}]:32345"),
            "dataset": dataset,
        }),
        ZoneType::InternalDns => json!({
            "dataset": dataset,
            "dns_address": format!("[{ip}]:53"),
            "gz_address": ip,
            "gz_address_index": 0,
            "http_address": format!("[{ip}]:5353"),
        }),
        ZoneType::ExternalDns => json!({
            "dataset": dataset,
            "dns_address": { "id": zone.id, "addr": "192.0.2.53:53" },
            "http_address": format!("[{ip}]:5353"),
            "nic": nic(zone),
        }),
        ZoneType::BoundaryNtp => json!({
            "address": format!("[{ip}]:123"),
            "dns_servers": [],
            "domain": null,
            "external_ip": {
                "id": zone.id,
                "snat_cfg": {
                    "ip": "192.0.2.123",
                    "first_port": 0,
                    "last_port": 16383,
                },
            },
            "nic": nic(zone),
            "ntp_servers": [],
        }),
        ZoneType::InternalNtp
        | ZoneType::CruciblePantry
        | ZoneType::Oximeter
        | ZoneType::Other(_) => json!({ "address": format!("[{ip}]:123") }),
    };
    value["type"] = Value::from(zone.zone_type.kind());
    value
}

/// A service NIC; the ids reuse the zone id, which is unique already.
fn nic(zone: &ZoneConfig) -> Value {
    json!({
        "id": zone.id,
        "kind": { "type": "service", "id": zone.id },
        "name": format!("{}-{}", zone.zone_type.kind().replace('_', "-"), zone.id),
        "ip_config": {
            "type": "v4",
            "value": {
                "ip": "172.30.2.5",
                "subnet": "172.30.2.0/24",
                "transit_ips": [],
            },
        },
        "mac": "a8:40:25:ff:00:01",
        "vni": 100,
        "primary": true,
        "slot": 0,
    })
}
