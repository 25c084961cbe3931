//! The control plane's snapshot file: what a start does with `<data-dir>/cp/snapshot.bin`.

use hivemind_control_plane::store::{decode_snapshot_file, encode_snapshot_file};

/// A file a start accepts must re-encode to a file that decodes to the same state.
pub fn file(data: &[u8]) {
    if let Some((meta, state)) = decode_snapshot_file(data.to_vec()) {
        let again = encode_snapshot_file(meta.clone(), &state);
        let (meta2, state2) = decode_snapshot_file(again).expect("a file we wrote decodes");
        assert_eq!(meta2, meta);
        assert_eq!(state2, state);
    }
}
