//! JSON views of registry data for the HTTP API (the registry's own serde form is the binary
//! snapshot format; these are the user-facing shapes of DESIGN.md §7). Each is a type with a
//! schema, so the OpenAPI document describes exactly what the handlers send.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use hivemind_common::MemberId;

use crate::registry::{
    Event, KeygroupConfig, KvEntry, MemberRecord, NodeConfig, Registry, Responsibility,
};

/// A registry event: `{index, epoch, kind: "member_joined", ...the kind's fields}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EventView(pub Value);

impl utoipa::PartialSchema for EventView {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property("index", ObjectBuilder::new().schema_type(Type::Integer))
            .property("epoch", ObjectBuilder::new().schema_type(Type::Integer))
            .property(
                "kind",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("member_joined, member_left, member_failed, member_address_changed, node_config_updated, epoch_started, keygroup_created, keygroup_updated, keygroup_deleted, responsibility_claimed, responsibility_released, and what roles report: nginx_render_failed (with `name` and `error`)")),
            )
            .required("index")
            .required("epoch")
            .required("kind")
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .description(Some("The event's own fields follow index, epoch and kind."))
            .into()
    }
}

impl ToSchema for EventView {}

pub fn event(e: &Event) -> EventView {
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
    // A role's report is tagged the same way one level down: its fields join the event's.
    if let Some(Value::Object(report)) = object.remove("report") {
        for (_, fields) in report {
            if let Value::Object(fields) = fields {
                object.extend(fields);
            }
        }
    }
    EventView(Value::Object(object))
}

/// A member as the registry records it (also read back by the CLI).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct MemberView {
    /// 16 hex digits.
    pub id: String,
    pub name: String,
    pub node: String,
    pub roles: Vec<String>,
    /// Gossip address (`IP:PORT`).
    pub addr: String,
    /// HTTP address (`IP:PORT`).
    pub http: String,
    /// `alive`, `failed` or `left` (`/v1/members` also says `suspect` for what SWIM suspects).
    pub state: String,
    pub generation: u64,
    pub control_plane: bool,
    pub updated_index: u64,
}

pub fn member(m: &MemberRecord) -> MemberView {
    MemberView {
        id: m.info.id.to_string(),
        name: m.info.name.clone(),
        node: m.info.node.clone(),
        roles: m.info.roles.clone(),
        addr: m.info.gossip_addr.clone(),
        http: m.info.http_addr.clone(),
        state: m.state.as_str().to_string(),
        generation: m.info.generation,
        control_plane: m.info.control_plane,
        updated_index: m.updated_index,
    }
}

/// A node: the machines it groups (DESIGN.md §7: `{node, machines:[{id,name}], version}`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct NodeView {
    pub node: String,
    pub machines: Vec<MachineView>,
    pub version: u64,
}

/// One machine of a node.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct MachineView {
    pub id: String,
    /// `null` if the registry no longer lists the member.
    pub name: Option<String>,
}

/// `name_of` finds a member's name.
pub fn node(n: &NodeConfig, name_of: impl Fn(MemberId) -> Option<String>) -> NodeView {
    NodeView {
        node: n.node.clone(),
        machines: n
            .machines
            .iter()
            .map(|m| MachineView {
                id: m.to_string(),
                name: name_of(*m),
            })
            .collect(),
        version: n.version,
    }
}

/// A KV entry with its value in base64 (`?meta=true` and listings).
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct KvView {
    pub key: String,
    pub value_base64: String,
    pub create_index: u64,
    pub modify_index: u64,
    /// The lease the key lives on (it goes when the lease ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
}

pub fn kv(key: &str, e: &KvEntry) -> KvView {
    KvView {
        key: key.to_string(),
        value_base64: base64::engine::general_purpose::STANDARD.encode(&e.value),
        create_index: e.create_index,
        modify_index: e.modify_index,
        lease: e.lease,
    }
}

/// A keygroup's config.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct KeygroupView {
    /// `APP/TENANT/GROUP`.
    pub name: String,
    pub version: u64,
    pub replicas: Vec<String>,
    pub triggers: Vec<String>,
    /// Record TTL in seconds.
    pub ttl: u32,
    pub open: bool,
    pub tombstoned: bool,
    pub updated_index: u64,
    /// Only for the admin or a replica or trigger node, never for a tombstone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_base64: Option<String>,
}

/// A keygroup config; its secret (base64) only when `show_secret` (admin, replica or trigger
/// node), never for a tombstone.
pub fn keygroup(k: &KeygroupConfig, show_secret: bool) -> KeygroupView {
    KeygroupView {
        name: k.name.clone(),
        version: k.version,
        replicas: k.replicas.iter().cloned().collect(),
        triggers: k.triggers.iter().cloned().collect(),
        ttl: k.ttl_secs,
        open: k.open,
        tombstoned: k.tombstoned,
        updated_index: k.updated_index,
        secret_base64: (show_secret && !k.tombstoned)
            .then(|| base64::engine::general_purpose::STANDARD.encode(&k.secret)),
    }
}

/// Who is responsible for a keygroup in a node.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ResponsibilityView {
    pub node: String,
    pub keygroup: String,
    /// The holder's member id.
    pub machine: String,
    pub machine_name: Option<String>,
    /// The log index of the claim.
    pub fence: u64,
    /// The streams the holder reports holding for it (`/v1/responsibilities` only; `null`
    /// when it did not answer).
    pub subscriptions: Option<u64>,
}

pub fn responsibility(r: &Responsibility, machine_name: Option<&str>) -> ResponsibilityView {
    ResponsibilityView {
        node: r.node.clone(),
        keygroup: r.keygroup.clone(),
        machine: r.machine.to_string(),
        machine_name: machine_name.map(str::to_string),
        fence: r.fence,
        subscriptions: None,
    }
}

/// The whole registry at one index (`GET /v1/cp/snapshot`); keygroup secrets are not in it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct RegistryView {
    pub keygroups: Vec<KeygroupView>,
    pub responsibilities: Vec<ResponsibilityView>,
    pub index: u64,
    pub epoch: u64,
    /// The feed holds every event after this index: the start of the epoch, or later once
    /// retention trimmed the oldest events.
    pub feed_start_index: u64,
    /// The same as `feed_start_index` (its name before retention trimmed the feed instead of
    /// starting a new epoch), kept for clients that read it.
    pub epoch_start_index: u64,
    pub members: Vec<MemberView>,
    pub nodes: Vec<NodeView>,
    pub kv: Vec<KvView>,
    pub events: Vec<EventView>,
}

pub fn registry(r: &Registry, index: u64) -> RegistryView {
    RegistryView {
        keygroups: r.keygroups().values().map(|k| keygroup(k, false)).collect(),
        responsibilities: r
            .responsibilities()
            .map(|x| responsibility(x, r.member(x.machine).map(|m| m.info.name.as_str())))
            .collect(),
        index,
        epoch: r.epoch(),
        epoch_start_index: r.feed_start_index(),
        feed_start_index: r.feed_start_index(),
        members: r.members().values().map(member).collect(),
        nodes: r
            .nodes()
            .values()
            .map(|n| node(n, |id| r.member(id).map(|m| m.info.name.clone())))
            .collect(),
        kv: r.kv_prefix("").map(|(k, e)| kv(k, e)).collect(),
        events: r.events().iter().map(event).collect(),
    }
}

pub use hivemind_common::api::{ErrorBody, ErrorDetail};

/// Answer of a KV write.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KvWritten {
    /// The modify index of the value written.
    pub index: u64,
}

/// Answer of a KV delete.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KvDeleted {
    pub deleted: bool,
    pub index: u64,
}

/// Answer of an epoch bump.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EpochStarted {
    pub epoch: u64,
    pub index: u64,
}

/// A page of the event feed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsPage {
    pub epoch: u64,
    /// The feed of this epoch starts after this index.
    pub first_index: u64,
    pub applied_index: u64,
    /// Pass as `after` to continue.
    pub next_after: u64,
    pub events: Vec<EventView>,
}

/// One change a watch answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WatchEvent {
    /// `put` or `delete`.
    pub kind: String,
    pub key: String,
    /// The new value (empty for a delete).
    pub value_base64: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A watch's answer: the changes under the prefix after the asked index, in index order, and
/// where to continue (every change up to `next_after` is in `events` or not under the prefix).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WatchPage {
    pub next_after: u64,
    pub events: Vec<WatchEvent>,
}

/// A lease: its id, TTL and the keys tied to it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    pub id: u64,
    pub ttl: String,
    /// The keys tied to it (in listings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Time left, when the answering member is the leader (only it keeps deadlines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
}
