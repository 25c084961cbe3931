//! How a member reaches the control plane, and what it asks of it for itself.
//!
//! - [`cp_access`]: the control plane in process or as a client (`CpAccess`), one call shape.
//! - [`cp_choice`]: which CP member a member talks to (sans IO: rendezvous order, fair shares).
//! - [`join`]: the join request and the joiner's loop.
//! - [`admission`]: the join route every member serves, this member's own `Join` and `Leave`,
//!   SWIM's verdicts carried to the control plane.
//! - [`feed`]: the follower that keeps the membership view current and re-bootstraps on `gone`.
//! - [`unheard`]: the leader reports live registry members SWIM does not vouch for.

pub mod admission;
pub mod cp_access;
pub mod cp_choice;
pub mod feed;
pub mod join;
pub mod unheard;
