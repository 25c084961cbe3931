//! The `dns` role: subscribes to host records, keeps `map[host] -> (record, seq)`, and answers
//! DNS for them with hickory-server.
//!
//! Today the role is loadable (so that `--roles dns` members perform `dns` for readiness) but
//! serves nothing: subscriptions and DNS answers arrive with the keygroups and roles issue
//! (DESIGN.md §5, §6).

use hivemind_common::role::{Role, RoleContext, Started};
use hivemind_common::roles::{self, RoleSpec};

pub struct DnsRole;

impl Role for DnsRole {
    fn spec(&self) -> &'static RoleSpec {
        roles::spec("dns").expect("dns is a known role")
    }

    fn start(self: Box<Self>, ctx: RoleContext) -> Started {
        Started {
            routes: axum::Router::new(),
            task: Box::pin(async move { ctx.shutdown.cancelled().await }),
        }
    }
}
