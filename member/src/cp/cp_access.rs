//! [`CpAccess`]: how a member reaches the control plane. A CP member has it in process; any
//! other member is a client of the CP members it learned from its join, tried in turn.

use std::sync::{Arc, Mutex};

use hivemind_common::role::{
    BoxFuture, Claim, ControlPlaneClient, CpCallError, KeygroupInfo, RoleReport,
};
use std::time::Duration;

use hivemind_common::MemberId;

use crate::cp::cp_choice;
#[cfg(feature = "control-plane")]
use hivemind_control_plane::authority::Caller;
use hivemind_control_plane::authority::Denied;
use hivemind_control_plane::member_requests::{MemberAnswer, MemberCall, MemberRequest};
use hivemind_control_plane::network::{CallError, InternalClient};
#[cfg(feature = "control-plane")]
use hivemind_control_plane::ops::MAX_EVENTS_PER_PAGE;
use hivemind_control_plane::ops::{self, FeedRequest, KeygroupQuery, Op, ViewAt, ViewRequest};
use hivemind_control_plane::registry::{
    AclTable, Actor, CommandOutput, FeedError, FeedPage, KeygroupConfig, RegistryDigest,
};
#[cfg(feature = "control-plane")]
use hivemind_control_plane::serve::Serve;
#[cfg(feature = "control-plane")]
use hivemind_control_plane::ControlPlane;
use hivemind_control_plane::{Applied, CpError, CpStatus};

/// The token the client presented, for a member that asks the control plane to act for the
/// client (the control plane decides with it again). Never printed.
#[derive(Clone, Default)]
pub struct ClientToken(pub Option<String>);

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ClientToken(..)"
        } else {
            "ClientToken(None)"
        })
    }
}

/// How this member reaches the control plane (a member built without the `control-plane`
/// feature is always a client).
pub enum CpAccess {
    #[cfg(feature = "control-plane")]
    Member(Arc<ControlPlane>),
    Client(Box<CpClient>),
}

/// A client of the control plane for members outside it.
pub struct CpClient {
    client: InternalClient,
    /// This member: its id orders the CP members ([`cp_choice`]).
    member: MemberId,
    /// CP members' HTTP addresses, in this member's order of preference; the first that
    /// answers is used.
    endpoints: Mutex<Vec<String>>,
    /// What the order was last computed from (the CP members and the members outside the
    /// control plane, sorted), so that an unchanged view costs no recomputation.
    computed_from: Mutex<(Vec<String>, Vec<MemberId>)>,
    /// Wakes the feed's long-poll when this member's first choice changed, so that it moves
    /// now rather than when the poll ends (up to 30 s later).
    moved: tokio::sync::Notify,
    timeout: Duration,
}

impl CpClient {
    /// `endpoints`: the CP members (ordered here by rendezvous weight until the membership
    /// view gives [`CpClient::set_endpoints`] more to go on), then any fallbacks (tried last,
    /// in the order given).
    pub fn new(
        client: InternalClient,
        member: MemberId,
        cp_members: Vec<String>,
        fallbacks: Vec<String>,
        timeout: Duration,
    ) -> Self {
        let mut endpoints = cp_members;
        cp_choice::preference(member, &mut endpoints);
        for fallback in fallbacks {
            if !endpoints.contains(&fallback) {
                endpoints.push(fallback);
            }
        }
        Self {
            client,
            member,
            endpoints: Mutex::new(endpoints),
            computed_from: Mutex::default(),
            moved: tokio::sync::Notify::new(),
            timeout,
        }
    }

    /// Replaces the endpoints with the CP members the registry lists (never with none), in
    /// this member's order given the members outside the control plane (`members`, from the
    /// membership view): a change of either rebalances ([`cp_choice::order`]).
    pub fn set_endpoints(&self, mut endpoints: Vec<String>, mut members: Vec<MemberId>) {
        if endpoints.is_empty() {
            return;
        }
        endpoints.sort_unstable();
        members.sort_unstable();
        let inputs = (endpoints, members);
        let mut computed_from = self.computed_from.lock().unwrap_or_else(|p| p.into_inner());
        if *computed_from == inputs {
            return;
        }
        let ordered = cp_choice::order(self.member, &inputs.1, &inputs.0);
        let previous = std::mem::replace(
            &mut *self.endpoints.lock().unwrap_or_else(|p| p.into_inner()),
            ordered.clone(),
        );
        *computed_from = inputs;
        if previous.first() != ordered.first() {
            self.moved.notify_waiters();
        }
    }

    /// The CP members' HTTP addresses, in this member's order of preference.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls operation `O` on the CP members in turn until one answers (unreachable ones are
    /// skipped).
    async fn op<O: Op>(&self, body: &O::Request) -> Result<O::Answer, CpError> {
        self.op_within::<O>(body, self.timeout + Duration::from_secs(1))
            .await
    }

    async fn op_within<O: Op>(
        &self,
        body: &O::Request,
        within: Duration,
    ) -> Result<O::Answer, CpError> {
        let mut last = String::from("no control-plane member known");
        for endpoint in self.endpoints() {
            match self.client.op::<O>(&endpoint, body, within).await {
                Ok(answer) => return Ok(answer),
                // Refused for who we are: every CP member would say the same.
                Err(CallError::Refused { code, message, .. }) => {
                    return Err(CpError::Forbidden(Denied::Heard { code, message }))
                }
                // Try the next CP member; report the last failure if none answers.
                Err(e) => last = e.to_string(),
            }
        }
        Err(CpError::NoQuorum {
            waited_ms: self.timeout.as_millis() as u64,
            detail: last,
        })
    }
}

impl CpClient {
    /// Passes a join request on to the control plane (this member cannot decide it).
    pub async fn forward_join(
        &self,
        request: &crate::cp::join::JoinRequest,
    ) -> Result<crate::cp::join::JoinAccepted, CpError> {
        self.op::<ops::Join>(request).await?
    }
}

impl CpAccess {
    /// The client of the control plane, unless this member runs it.
    pub fn client(&self) -> Option<&CpClient> {
        match self {
            #[cfg(feature = "control-plane")]
            CpAccess::Member(_) => None,
            CpAccess::Client(client) => Some(client),
        }
    }

    /// Asks the control plane to do what `request` names for this member; it decides (see
    /// `hivemind_control_plane::member_requests`).
    pub async fn request(&self, request: MemberRequest) -> Result<MemberAnswer, CpError> {
        self.request_for(request, &ClientToken::default()).await
    }

    /// Asks the control plane to do what `request` names for a client that presented
    /// `client` here: a control-plane member already decided the client's token (its ACL
    /// layer), any other forwards it and the control plane decides it again
    /// (`authority::may_request`).
    pub async fn request_for(
        &self,
        request: MemberRequest,
        client: &ClientToken,
    ) -> Result<MemberAnswer, CpError> {
        let call = MemberCall {
            request,
            client_token: client.0.clone(),
        };
        self.call::<ops::Request>(call).await?
    }

    /// Operation `O`, answered by the one function that serves it ([`Serve`]): in process on
    /// a CP member, over the wire on any other (where the control plane checks who asks).
    #[cfg(feature = "control-plane")]
    pub async fn call<O: Serve>(&self, request: O::Request) -> Result<O::Answer, CpError> {
        match self {
            CpAccess::Member(cp) => Ok(O::serve(cp, &Caller::InProcess, request).await?),
            CpAccess::Client(client) => client.op::<O>(&request).await,
        }
    }

    /// Operation `O`, over the wire (a member without the control plane is always a client).
    #[cfg(not(feature = "control-plane"))]
    pub async fn call<O: Op>(&self, request: O::Request) -> Result<O::Answer, CpError> {
        let CpAccess::Client(client) = self;
        client.op::<O>(&request).await
    }

    /// A request that becomes one command: its applied outcome.
    pub async fn apply(&self, request: MemberRequest) -> Result<Applied, CpError> {
        match self.request(request).await? {
            MemberAnswer::Applied(applied) => Ok(applied),
            other => Err(CpError::Fatal(format!("unexpected answer {other:?}"))),
        }
    }

    /// The registry as node `node` may see it (DESIGN.md §6e-2: members, nodes, keygroups
    /// with this node's secrets only, responsibilities, the backup ledger) at `at`:
    /// `Applied(0)` is a CP member's applied state (not linearizable).
    pub async fn view(&self, node: &str, at: ViewAt) -> Result<RegistryDigest, CpError> {
        let node = node.to_string();
        self.call::<ops::View>(ViewRequest { node, at }).await?
    }

    /// One keygroup, linearizable, its secret only if `node` replicates or triggers it.
    pub async fn keygroup(
        &self,
        node: &str,
        name: &str,
    ) -> Result<Option<KeygroupConfig>, CpError> {
        let query = KeygroupQuery {
            name: name.to_string(),
            node: node.to_string(),
        };
        self.call::<ops::KeygroupRead>(query).await?
    }

    /// The ACL table as a CP member applied it.
    pub async fn acl_table(&self) -> Result<AclTable, CpError> {
        self.call::<ops::AclTable>(()).await?
    }

    /// The event feed after `after` (long-polls up to `wait`); the inner error says the reader
    /// must re-bootstrap.
    pub async fn feed(
        &self,
        after: u64,
        epoch: Option<u64>,
        wait: Duration,
    ) -> Result<Result<FeedPage, FeedError>, CpError> {
        match self {
            #[cfg(feature = "control-plane")]
            CpAccess::Member(cp) => Ok(cp.feed(after, epoch, MAX_EVENTS_PER_PAGE, wait).await),
            CpAccess::Client(client) => {
                let request = FeedRequest {
                    after,
                    epoch,
                    wait_ms: wait.as_millis() as u64,
                };
                loop {
                    let moved = client.moved.notified();
                    tokio::select! {
                        answer = client.op_within::<ops::Feed>(&request, wait + client.timeout) => {
                            return answer;
                        }
                        // Ask again, on the CP member now first.
                        _ = moved => {}
                    }
                }
            }
        }
    }

    /// The control plane's status as this member can see it (`None`: no CP member answered).
    pub async fn status(&self) -> Option<CpStatus> {
        match self {
            #[cfg(feature = "control-plane")]
            CpAccess::Member(cp) => Some(cp.status().await),
            // Internal route: it needs the cluster secret, not the admin token.
            CpAccess::Client(client) => client
                .op_within::<ops::Status>(&(), Duration::from_secs(2))
                .await
                .ok(),
        }
    }
}

/// The control plane as roles reach it ([`ControlPlaneClient`]), over this member's access,
/// acting as this member's node.
#[derive(Clone)]
pub struct RoleCp {
    pub cp: Arc<CpAccess>,
    pub node: String,
    pub id: hivemind_common::MemberId,
    /// This member's membership view: every registry read a role makes is at least as new as
    /// the events it was handed (a CP member that lags behind waits until it applied them).
    pub seen: tokio::sync::watch::Receiver<Arc<crate::view::MembershipView>>,
}

fn info(k: &KeygroupConfig, node: &str) -> KeygroupInfo {
    KeygroupInfo {
        name: k.name.clone(),
        version: k.version,
        replicas: k.replicas.clone(),
        triggers: k.triggers.clone(),
        ttl_secs: k.ttl_secs,
        open: k.open,
        // The same rule as the HTTP API's.
        secret: if k.may_see_secret(&Actor::Node(node.to_string())) {
            k.secret.clone()
        } else {
            Vec::new()
        },
        tombstoned: k.tombstoned,
    }
}

impl RoleCp {
    async fn join_keygroup(&self, name: &str) -> Result<KeygroupInfo, CpError> {
        let request = MemberRequest::JoinKeygroup {
            name: name.to_string(),
            node: self.node.clone(),
            seen: self.seen.borrow().index,
        };
        match self.cp.request(request).await? {
            MemberAnswer::Keygroup(k) => Ok(info(&k, &self.node)),
            other => Err(CpError::Fatal(format!("unexpected answer {other:?}"))),
        }
    }
}

fn call_error(e: CpError) -> CpCallError {
    CpCallError {
        code: e.code().to_string(),
        message: e.to_string(),
    }
}

impl ControlPlaneClient for RoleCp {
    fn keygroup(&self, name: String) -> BoxFuture<Result<Option<KeygroupInfo>, CpCallError>> {
        let this = self.clone();
        Box::pin(async move {
            // Linearizable: a subscriber that cannot open a record re-reads here, and must see
            // a rotation that a publisher already sealed with (DESIGN.md §5 event [5]). The
            // control plane sends the secret only to the keygroup's nodes.
            let keygroup = this
                .cp
                .keygroup(&this.node, &name)
                .await
                .map_err(call_error)?;
            Ok(keygroup.map(|k| info(&k, &this.node)))
        })
    }

    fn join_keygroup(&self, name: String) -> BoxFuture<Result<KeygroupInfo, CpCallError>> {
        let this = self.clone();
        Box::pin(async move { this.join_keygroup(&name).await.map_err(call_error) })
    }

    fn claim(&self, keygroup: String) -> BoxFuture<Result<Claim, CpCallError>> {
        let this = self.clone();
        Box::pin(async move {
            // The control plane answers from the registry when it already decides, and
            // writes only to take over a free or released responsibility.
            let request = MemberRequest::Claim {
                node: this.node.clone(),
                keygroup,
                machine: this.id,
                seen: this.seen.borrow().index,
            };
            match this.cp.request(request).await.map_err(call_error)? {
                MemberAnswer::Claimed { fence } => Ok(Claim::Mine { fence }),
                MemberAnswer::HeldBy { machine } => Ok(Claim::HeldBy { machine }),
                other => Err(CpCallError {
                    code: "stopped".into(),
                    message: format!("unexpected answer {other:?}"),
                }),
            }
        })
    }

    fn report(&self, report: RoleReport) -> BoxFuture<Result<u64, CpCallError>> {
        let this = self.clone();
        Box::pin(async move {
            let request = MemberRequest::Report {
                member: this.id,
                report,
            };
            let applied = this.cp.apply(request).await.map_err(call_error)?;
            Ok(applied.index)
        })
    }

    fn backup(
        &self,
        op: hivemind_common::backup::BackupOp,
    ) -> BoxFuture<Result<hivemind_common::backup::BackupOutcome, CpCallError>> {
        let this = self.clone();
        Box::pin(async move {
            let request = MemberRequest::Backup {
                member: this.id,
                op,
            };
            let applied = this.cp.apply(request).await.map_err(call_error)?;
            match applied.output {
                CommandOutput::Backup(outcome) => Ok(outcome),
                other => Err(CpCallError {
                    code: "stopped".into(),
                    message: format!("unexpected outcome {other:?}"),
                }),
            }
        })
    }

    fn backup_state(&self) -> BoxFuture<Result<hivemind_common::backup::BackupState, CpCallError>> {
        let this = self.clone();
        Box::pin(async move {
            let view = this
                .cp
                .view(&this.node, ViewAt::Now)
                .await
                .map_err(call_error)?;
            Ok(view.backup)
        })
    }
}
