//! The `backup` role (seed 004, DESIGN.md §6d).
pub mod crypto;
pub mod placement;
pub mod tree;
