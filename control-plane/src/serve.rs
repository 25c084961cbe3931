//! What a member asks of the control plane, one typed path per operation: [`Serve::serve`] is
//! the one function that answers it, whether the member runs the control plane in process
//! (`member::CpAccess::call`) or calls it over the wire (`http/internal.rs` mounts
//! [`Serve::serve`] behind each route), and the caller's identity is checked there, once
//! ([`crate::authority`]).

use std::future::Future;

use crate::authority::{self, Caller, Denied};
use crate::control::ControlPlane;
use crate::error::CpError;
use crate::ops::{self, Op};
use crate::registry::{AclTable, Actor};
use crate::CpStatus;

/// An operation a member may ask, answered the same way in process and over the wire.
pub trait Serve: Op {
    /// Answers `request` from `caller` on this CP member; a caller the request is not for is
    /// refused before anything happens.
    fn serve(
        cp: &ControlPlane,
        caller: &Caller,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Answer, Denied>> + Send;
}

impl Serve for ops::Request {
    /// A member's request, if it is the caller's own to ask; a keygroup in the answer carries
    /// its secret only for the caller's node.
    async fn serve(
        cp: &ControlPlane,
        caller: &Caller,
        call: Self::Request,
    ) -> Result<Self::Answer, Denied> {
        let client = authority::ForClient {
            token: call.client_token.as_deref(),
            admin_token: cp.config().admin_token.as_deref(),
            now_ms: crate::access::now_ms(),
        };
        let scope = {
            let state = cp.state().read();
            authority::may_request(&call.request, caller, &state.registry, client)?;
            authority::answer_scope(caller, &state.registry)
        };
        Ok(cp.request(call.request).await.map(|a| match scope {
            Some(reader) => a.scoped(reader.as_ref()),
            None => a,
        }))
    }
}

/// Whose keygroup secrets a read for `node` may carry, on this member's applied registry.
fn reader(cp: &ControlPlane, caller: &Caller, node: &str) -> Result<Option<Actor>, Denied> {
    let state = cp.state().read();
    authority::secrets_for(node, caller, &state.registry)
}

impl Serve for ops::View {
    /// A member's node-scoped view of the registry.
    async fn serve(
        cp: &ControlPlane,
        caller: &Caller,
        request: Self::Request,
    ) -> Result<Self::Answer, Denied> {
        let reader = reader(cp, caller, &request.node)?;
        Ok(cp.view(request.at, reader.as_ref()).await)
    }
}

impl Serve for ops::KeygroupRead {
    /// One keygroup, linearizable, its secret only for the caller's node's keygroups.
    async fn serve(
        cp: &ControlPlane,
        caller: &Caller,
        request: Self::Request,
    ) -> Result<Self::Answer, Denied> {
        let reader = reader(cp, caller, &request.node)?;
        Ok(cp.keygroup_now(&request.name, reader.as_ref()).await)
    }
}

impl Serve for ops::AclTable {
    /// The ACL table as applied here: policies and token hashes, what members enforce.
    async fn serve(
        cp: &ControlPlane,
        _caller: &Caller,
        (): Self::Request,
    ) -> Result<Result<AclTable, CpError>, Denied> {
        Ok(Ok(cp.acl()))
    }
}

impl Serve for ops::Status {
    /// This CP member's Raft status.
    async fn serve(
        cp: &ControlPlane,
        _caller: &Caller,
        (): Self::Request,
    ) -> Result<CpStatus, Denied> {
        Ok(cp.status().await)
    }
}
