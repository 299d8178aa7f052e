//! lib0-compatible variable-length unsigned integers and a bounds-checked byte reader.
//!
//! lib0's `writeVarUint` emits 7 payload bits per byte, least significant group first, with
//! the high bit (0x80) set on every byte except the last. JavaScript numbers are only exact up
//! to `Number.MAX_SAFE_INTEGER` (2^53 - 1), which needs at most 8 bytes.

use super::error::{CodecError, WireField};

/// `Number.MAX_SAFE_INTEGER` (2^53 - 1): the largest integer lib0 can round-trip exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Maximum number of bytes a varUint may occupy: ceil(53 / 7) = 8.
pub const MAX_VAR_UINT_LEN: usize = 8;

/// Appends `value` as a lib0 varUint. Callers must range-check values that JS has to read.
pub(crate) fn write_var_uint(out: &mut Vec<u8>, mut value: u64) {
    while value > 0x7f {
        out.push(0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a lib0 `varUint8Array`: varUint byte length followed by the bytes.
pub(crate) fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_uint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over untrusted input that never reads out of bounds and never panics.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Number of unread bytes.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Current offset from the start of the input.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Reads a varUint no larger than [`MAX_SAFE_INTEGER`] and at most
    /// [`MAX_VAR_UINT_LEN`] bytes long.
    ///
    /// Like lib0, non-minimal encodings (e.g. `0x80 0x00` for 0) are accepted as long as they
    /// fit in 8 bytes; lib0 would accept arbitrarily long zero padding, which we refuse.
    pub(crate) fn read_var_uint(&mut self, field: WireField) -> Result<u64, CodecError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VAR_UINT_LEN {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(CodecError::Truncated { field });
            };
            self.pos += 1;
            // i <= 7, so the shift is at most 49 and (0x7f << 49) < 2^56: no u64 overflow.
            value |= u64::from(byte & 0x7f) << (7 * i);
            if value > MAX_SAFE_INTEGER {
                return Err(CodecError::VarIntOverflow { field });
            }
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarIntOverflow { field })
    }

    /// Reads a varUint length followed by that many bytes, without copying.
    pub(crate) fn read_var_bytes(
        &mut self,
        length_field: WireField,
        data_field: WireField,
    ) -> Result<&'a [u8], CodecError> {
        let length = self.read_var_uint(length_field)?;
        self.read_exact(length, data_field)
    }

    /// Reads exactly `length` bytes or fails with [`CodecError::LengthOutOfBounds`].
    pub(crate) fn read_exact(
        &mut self,
        length: u64,
        field: WireField,
    ) -> Result<&'a [u8], CodecError> {
        let remaining = self.remaining();
        let out_of_bounds = CodecError::LengthOutOfBounds {
            field,
            length,
            remaining,
        };
        let len = usize::try_from(length).map_err(|_| out_of_bounds.clone())?;
        if len > remaining {
            return Err(out_of_bounds);
        }
        let end = self.pos + len;
        let slice = self.bytes.get(self.pos..end).ok_or(out_of_bounds)?;
        self.pos = end;
        Ok(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_uint(&mut out, v);
        out
    }

    #[test]
    fn known_encodings() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(
            enc(MAX_SAFE_INTEGER),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]
        );
    }

    #[test]
    fn read_limits() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(r.read_var_uint(WireField::Clock), Ok(MAX_SAFE_INTEGER));
        // 2^53 does not fit in a JS safe integer.
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]);
        assert_eq!(
            r.read_var_uint(WireField::Clock),
            Err(CodecError::VarIntOverflow {
                field: WireField::Clock
            })
        );
        // Nine bytes is always too long, even when the value is small.
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
        assert_eq!(
            r.read_var_uint(WireField::ClientId),
            Err(CodecError::VarIntOverflow {
                field: WireField::ClientId
            })
        );
        // Non-minimal but short padding is accepted, like lib0.
        let mut r = Reader::new(&[0x81, 0x00]);
        assert_eq!(r.read_var_uint(WireField::ClientId), Ok(1));
        let mut r = Reader::new(&[0x81]);
        assert_eq!(
            r.read_var_uint(WireField::ClientId),
            Err(CodecError::Truncated {
                field: WireField::ClientId
            })
        );
    }
}
