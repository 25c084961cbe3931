//! The `dns` role: subscribes to host records, keeps `map[host] -> (record, seq)`, and answers
//! DNS for them with hickory-server.
//!
//! Not built yet: it arrives with the keygroups and roles issue (DESIGN.md §5, §6). The crate
//! exists so that the workspace has its final shape and dependency direction
//! (`common` <- `dns-role` <- `member`).
