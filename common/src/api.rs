//! Shapes every HTTP route shares (the CP's, the member's and the roles'): the error body, and
//! the one datacenter the Consul-compatible routes name.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every 4xx and 5xx answer: `{"error": {"code": "...", "message": "...", ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `bad_request`, `not_found`, `no_quorum`, `cas_failed`, ...
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
            },
        }
    }
}

/// The one datacenter of the Consul-compatible routes (the catalog, the agent API): what `?dc=`
/// must name and what answers say.
pub const CONSUL_DATACENTER: &str = "hivemind";
