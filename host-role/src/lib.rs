//! The `host` role: publishes this machine's record (name, addresses, services) with a
//! growing seq into its keygroups and serves subscription streams to the dns role.
//!
//! Not built yet: it arrives with the keygroups and roles issue (DESIGN.md §5, §6). The crate
//! exists so that the workspace has its final shape and dependency direction
//! (`common` <- `host-role` <- `member`).
