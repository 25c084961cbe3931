//! JSON views of registry data for the HTTP API (the registry's own serde form is the binary
//! snapshot format; these are the user-facing shapes of DESIGN.md §7).

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::registry::{
    Event, KeygroupConfig, KvEntry, MemberRecord, NodeConfig, Registry, Responsibility,
};

/// `{index, epoch, kind: "member_joined", ...fields}`.
pub fn event(e: &Event) -> Value {
    let mut object = Map::new();
    object.insert("index".into(), e.index.into());
    object.insert("epoch".into(), e.epoch.into());
    object.insert("kind".into(), e.kind.name().into());
    // serde's externally tagged form is {"Variant": {fields}}: lift the fields up.
    if let Ok(Value::Object(tagged)) = serde_json::to_value(&e.kind) {
        for (_, fields) in tagged {
            if let Value::Object(fields) = fields {
                object.extend(fields);
            }
        }
    }
    Value::Object(object)
}

pub fn member(m: &MemberRecord) -> Value {
    json!({
        "id": m.info.id.to_string(),
        "name": m.info.name,
        "node": m.info.node,
        "roles": m.info.roles,
        "addr": m.info.gossip_addr,
        "http": m.info.http_addr,
        "state": m.state.as_str(),
        "generation": m.info.generation,
        "control_plane": m.info.control_plane,
        "updated_index": m.updated_index,
    })
}

pub fn node(n: &NodeConfig) -> Value {
    json!({
        "node": n.node,
        "machines": n.machines.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        "version": n.version,
    })
}

pub fn kv(key: &str, e: &KvEntry) -> Value {
    json!({
        "key": key,
        "value_base64": base64::engine::general_purpose::STANDARD.encode(&e.value),
        "create_index": e.create_index,
        "modify_index": e.modify_index,
    })
}

/// A keygroup config; its secret (base64) only when `show_secret` (admin, replica or trigger
/// node), never for a tombstone.
pub fn keygroup(k: &KeygroupConfig, show_secret: bool) -> Value {
    let mut view = json!({
        "name": k.name,
        "version": k.version,
        "replicas": k.replicas,
        "triggers": k.triggers,
        "ttl": k.ttl_secs,
        "open": k.open,
        "tombstoned": k.tombstoned,
        "updated_index": k.updated_index,
    });
    if show_secret && !k.tombstoned {
        view["secret_base64"] = base64::engine::general_purpose::STANDARD
            .encode(&k.secret)
            .into();
    }
    view
}

/// `{node, keygroup, machine, machine_name, fence}`.
pub fn responsibility(r: &Responsibility, machine_name: Option<&str>) -> Value {
    json!({
        "node": r.node,
        "keygroup": r.keygroup,
        "machine": r.machine.to_string(),
        "machine_name": machine_name,
        "fence": r.fence,
    })
}

/// The whole registry at `index` (`GET /v1/cp/snapshot`); keygroup secrets are not in it.
pub fn registry(r: &Registry, index: u64) -> Value {
    json!({
        "keygroups": r.keygroups().values().map(|k| keygroup(k, false)).collect::<Vec<_>>(),
        "responsibilities": r
            .responsibilities()
            .map(|x| responsibility(x, r.member(x.machine).map(|m| m.info.name.as_str())))
            .collect::<Vec<_>>(),
        "index": index,
        "epoch": r.epoch(),
        "epoch_start_index": r.epoch_start_index(),
        "members": r.members().values().map(member).collect::<Vec<_>>(),
        "nodes": r.nodes().values().map(node).collect::<Vec<_>>(),
        "kv": r.kv_prefix("").map(|(k, e)| kv(k, e)).collect::<Vec<_>>(),
        "events": r.events().iter().map(event).collect::<Vec<_>>(),
    })
}
