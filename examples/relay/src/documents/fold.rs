//! Folding a document's updates into one (compaction's snapshot).

use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact, Update};

/// One update holding every given update (applied in order into a fresh document, encoded as
/// its whole state: deleted content is garbage-collected, and updates still waiting for a
/// missing dependency are kept, as `encode_state_as_update` includes pending ones). An update
/// that does not decode is skipped with a warning: it was never applied anywhere either.
pub fn fold<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let doc = yrs::Doc::new();
    {
        let mut txn = doc.transact_mut();
        for bytes in updates {
            match Update::decode_v1(bytes) {
                Ok(update) => {
                    if let Err(error) = txn.apply_update(update) {
                        tracing::warn!(%error, "a stored update does not apply; left out");
                    }
                }
                Err(error) => tracing::warn!(%error, "a stored update does not decode; left out"),
            }
        }
    }
    let txn = doc.transact();
    txn.encode_state_as_update_v1(&StateVector::default())
}
