//! Jute, ZooKeeper's record serialization: big-endian primitives, length-prefixed buffers and
//! strings, count-prefixed vectors (see `BinaryInputArchive` / `BinaryOutputArchive`).
//!
//! The reader borrows from the frame and checks every length against the bytes that remain
//! before it allocates anything, so a hostile length costs nothing.

use bytes::BufMut;

/// Why a jute record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record ended before a field did.
    #[error("truncated record: {needed} bytes needed at offset {offset}, {remaining} left")]
    Truncated {
        offset: usize,
        needed: usize,
        remaining: usize,
    },
    /// A buffer/string length or vector count that is negative (other than -1) or larger
    /// than what remains of the frame.
    #[error("unreasonable length {len} at offset {offset}")]
    BadLength { offset: usize, len: i32 },
    /// A `ustring` that is not valid UTF-8.
    #[error("invalid UTF-8 in string at offset {offset}")]
    BadUtf8 { offset: usize },
    /// A null (-1) string or vector where the record needs a value.
    #[error("unexpected null at offset {offset}")]
    UnexpectedNull { offset: usize },
    /// A field whose value is outside what the record allows (enum, op type, flags).
    #[error("invalid {what}: {value}")]
    BadValue { what: &'static str, value: i64 },
}

/// Cursor over a jute-encoded byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Start reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread tail of the input.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// `int`: 4 bytes, big-endian.
    pub fn read_int(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take_array()?))
    }

    /// `long`: 8 bytes, big-endian.
    pub fn read_long(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take_array()?))
    }

    /// `boolean`: one byte; like Java's `DataInput.readBoolean`, any non-zero byte is true.
    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.take(1)?[0] != 0)
    }

    /// Reads a length prefix: `None` for -1, an error for other negatives or for lengths
    /// larger than `remaining / min_elem` (so callers may allocate `len` elements safely).
    fn read_len(&mut self, min_elem: usize) -> Result<Option<usize>, DecodeError> {
        let offset = self.pos;
        let len = self.read_int()?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len).map_err(|_| DecodeError::BadLength { offset, len })?;
        if n.saturating_mul(min_elem.max(1)) > self.remaining() {
            return Err(DecodeError::BadLength { offset, len });
        }
        Ok(Some(n))
    }

    /// `buffer`: int length + bytes; `None` when the length is -1 (null).
    pub fn read_buffer(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.read_len(1)? {
            None => Ok(None),
            Some(n) => self.take(n).map(Some),
        }
    }

    /// `buffer` where null means empty (how ZooKeeper treats null data and passwords).
    pub fn read_buffer_or_empty(&mut self) -> Result<&'a [u8], DecodeError> {
        Ok(self.read_buffer()?.unwrap_or(&[]))
    }

    /// `ustring`: int length + UTF-8 bytes; `None` when the length is -1 (null).
    pub fn read_ustring(&mut self) -> Result<Option<&'a str>, DecodeError> {
        let offset = self.pos;
        match self.read_buffer()? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| DecodeError::BadUtf8 { offset }),
        }
    }

    /// `ustring` that must not be null.
    pub fn read_string(&mut self) -> Result<&'a str, DecodeError> {
        let offset = self.pos;
        self.read_ustring()?
            .ok_or(DecodeError::UnexpectedNull { offset })
    }

    /// `vector` count: `None` for -1 (null). `min_elem` is the smallest encoded size of one
    /// element; counts that cannot fit in the remaining bytes are rejected.
    pub fn read_vec_len(&mut self, min_elem: usize) -> Result<Option<usize>, DecodeError> {
        self.read_len(min_elem)
    }

    /// `vector<ustring>`, null read as empty; null elements are an error.
    pub fn read_string_vec(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.read_vec_len(4)?.unwrap_or(0);
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.read_string()?.to_owned());
        }
        Ok(v)
    }
}

fn len_i32(len: usize) -> i32 {
    // Frames are capped at jute.maxbuffer (well under 2 GiB); a longer field is a bug upstream.
    i32::try_from(len).expect("jute field longer than i32::MAX bytes")
}

/// Write an `int`.
pub fn write_int(out: &mut impl BufMut, v: i32) {
    out.put_i32(v);
}

/// Write a `long`.
pub fn write_long(out: &mut impl BufMut, v: i64) {
    out.put_i64(v);
}

/// Write a `boolean` (0 or 1).
pub fn write_bool(out: &mut impl BufMut, v: bool) {
    out.put_u8(u8::from(v));
}

/// Write a non-null `buffer`.
pub fn write_buffer(out: &mut impl BufMut, b: &[u8]) {
    out.put_i32(len_i32(b.len()));
    out.put_slice(b);
}

/// Write a `buffer`, `None` as null (-1).
pub fn write_opt_buffer(out: &mut impl BufMut, b: Option<&[u8]>) {
    match b {
        Some(b) => write_buffer(out, b),
        None => out.put_i32(-1),
    }
}

/// Write a non-null `ustring`.
pub fn write_ustring(out: &mut impl BufMut, s: &str) {
    write_buffer(out, s.as_bytes());
}

/// Write a `ustring`, `None` as null (-1).
pub fn write_opt_ustring(out: &mut impl BufMut, s: Option<&str>) {
    write_opt_buffer(out, s.map(str::as_bytes));
}

/// Write a `vector` count.
pub fn write_vec_len(out: &mut impl BufMut, n: usize) {
    out.put_i32(len_i32(n));
}

/// Write a `vector<ustring>`.
pub fn write_string_vec<S: AsRef<str>>(out: &mut impl BufMut, v: &[S]) {
    write_vec_len(out, v.len());
    for s in v {
        write_ustring(out, s.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn primitives_are_big_endian() {
        let mut b = BytesMut::new();
        write_int(&mut b, 0x0102_0304);
        write_long(&mut b, -2);
        write_bool(&mut b, true);
        write_ustring(&mut b, "/a");
        write_opt_buffer(&mut b, None);
        assert_eq!(
            &b[..],
            &[
                1, 2, 3, 4, // int
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, // long -2
                1,    // bool
                0, 0, 0, 2, b'/', b'a', // ustring
                0xff, 0xff, 0xff, 0xff, // null buffer
            ]
        );
        let mut r = Reader::new(&b);
        assert_eq!(r.read_int(), Ok(0x0102_0304));
        assert_eq!(r.read_long(), Ok(-2));
        assert_eq!(r.read_bool(), Ok(true));
        assert_eq!(r.read_ustring(), Ok(Some("/a")));
        assert_eq!(r.read_buffer(), Ok(None));
        assert!(r.is_empty());
    }

    #[test]
    fn bool_accepts_any_nonzero_like_java() {
        assert_eq!(Reader::new(&[7]).read_bool(), Ok(true));
        assert_eq!(Reader::new(&[0]).read_bool(), Ok(false));
    }

    #[test]
    fn rejects_hostile_lengths() {
        // Claims 2 GiB with 4 bytes behind it: rejected before any allocation.
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        assert!(matches!(
            r.read_buffer(),
            Err(DecodeError::BadLength { offset: 0, .. })
        ));
        // -2 is not null.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xfe]);
        assert!(matches!(
            r.read_buffer(),
            Err(DecodeError::BadLength { .. })
        ));
        // A vector of 3 strings needs at least 12 more bytes.
        let mut r = Reader::new(&[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(
            r.read_string_vec(),
            Err(DecodeError::BadLength { .. })
        ));
        // Truncated int.
        assert!(matches!(
            Reader::new(&[0, 0, 1]).read_int(),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn rejects_invalid_utf8_and_null_where_required() {
        let mut r = Reader::new(&[0, 0, 0, 2, 0xc3, 0x28]);
        assert!(matches!(
            r.read_ustring(),
            Err(DecodeError::BadUtf8 { offset: 0 })
        ));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.read_string(),
            Err(DecodeError::UnexpectedNull { offset: 0 })
        ));
    }
}
