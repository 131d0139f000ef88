//! Length-prefixed framing of the ZooKeeper client port, and four-letter-word detection.
//!
//! Every packet, both ways, is `int32 length` + `length` bytes. ZooKeeper (`NIOServerCnxn.
//! readLength`) closes the connection on a length < 0 or > `jute.maxbuffer`; before the first
//! frame it first checks whether the 4 length bytes spell a four-letter command.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// ZooKeeper's default `jute.maxbuffer`: 0xfffff bytes (1 MiB - 1).
pub const DEFAULT_MAX_FRAME: usize = 0xfffff;

/// Why the frame stream must be closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length prefix that is negative or larger than the configured maximum.
    #[error("frame length {len} is negative or exceeds jute.maxbuffer={max}")]
    BadLength { len: i32, max: usize },
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits a byte stream into frame bodies (prefix stripped) and writes bodies with a prefix.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// A codec accepting frames of at most `max_frame` bytes (`jute.maxbuffer`).
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max: max_frame }
    }

    /// The largest accepted frame body.
    pub fn max_frame(&self) -> usize {
        self.max
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let n = match usize::try_from(len) {
            Ok(n) if n <= self.max => n,
            _ => return Err(FrameError::BadLength { len, max: self.max }),
        };
        if src.len() < 4 + n {
            // No reserve for the announced length: idle connections that announce big
            // frames would otherwise pin up to max_frame each; the buffer grows as bytes come.
            return Ok(None);
        }
        src.advance(4);
        Ok(Some(src.split_to(n)))
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    /// Writes `len(body)` + `body`. Outgoing size is not checked (ZooKeeper does not either;
    /// clients enforce their own `jute.maxbuffer`).
    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = i32::try_from(body.len()).map_err(|_| FrameError::BadLength {
            len: i32::MAX,
            max: self.max,
        })?;
        dst.reserve(4 + body.len());
        dst.put_i32(len);
        dst.put_slice(body);
        Ok(())
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    /// Same as the `&[u8]` encoder.
    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        <Self as Encoder<&[u8]>>::encode(self, &body, dst)
    }
}

/// A four-letter command recognised on a fresh connection (`FourLetterCommands`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FourLetterWord {
    /// `conf`.
    Conf,
    /// `cons`.
    Cons,
    /// `crst`.
    Crst,
    /// `dirs`.
    Dirs,
    /// `dump`.
    Dump,
    /// `envi`.
    Envi,
    /// `gtmk`.
    Gtmk,
    /// `ruok`.
    Ruok,
    /// `stmk`: ZooKeeper then reads an 8-byte trace mask (one read, no framing).
    Stmk,
    /// `srvr`.
    Srvr,
    /// `srst`.
    Srst,
    /// `stat`.
    Stat,
    /// `wchc`.
    Wchc,
    /// `wchp`.
    Wchp,
    /// `wchs`.
    Wchs,
    /// `mntr`.
    Mntr,
    /// `isro`.
    Isro,
    /// `hash`.
    Hash,
    /// Telnet's interrupt sequence `ff f4 ff fd`, which ZooKeeper also registers (as
    /// "telnet close"); it is never whitelisted by name, so it just gets the not-whitelisted text.
    TelnetClose,
}

impl FourLetterWord {
    /// Every command, in ZooKeeper's registration order.
    pub const ALL: [FourLetterWord; 19] = [
        FourLetterWord::Conf,
        FourLetterWord::Cons,
        FourLetterWord::Crst,
        FourLetterWord::Dirs,
        FourLetterWord::Dump,
        FourLetterWord::Envi,
        FourLetterWord::Gtmk,
        FourLetterWord::Ruok,
        FourLetterWord::Stmk,
        FourLetterWord::Srst,
        FourLetterWord::Srvr,
        FourLetterWord::Stat,
        FourLetterWord::Wchc,
        FourLetterWord::Wchp,
        FourLetterWord::Wchs,
        FourLetterWord::Mntr,
        FourLetterWord::Isro,
        FourLetterWord::TelnetClose,
        FourLetterWord::Hash,
    ];

    /// The 4 bytes that spell the command.
    pub fn bytes(self) -> [u8; 4] {
        match self {
            FourLetterWord::TelnetClose => [0xff, 0xf4, 0xff, 0xfd],
            w => {
                let s = w.name().as_bytes();
                [s[0], s[1], s[2], s[3]]
            }
        }
    }

    /// The command's name as ZooKeeper prints it (whitelist entries, log lines).
    pub fn name(self) -> &'static str {
        match self {
            FourLetterWord::Conf => "conf",
            FourLetterWord::Cons => "cons",
            FourLetterWord::Crst => "crst",
            FourLetterWord::Dirs => "dirs",
            FourLetterWord::Dump => "dump",
            FourLetterWord::Envi => "envi",
            FourLetterWord::Gtmk => "gtmk",
            FourLetterWord::Ruok => "ruok",
            FourLetterWord::Stmk => "stmk",
            FourLetterWord::Srvr => "srvr",
            FourLetterWord::Srst => "srst",
            FourLetterWord::Stat => "stat",
            FourLetterWord::Wchc => "wchc",
            FourLetterWord::Wchp => "wchp",
            FourLetterWord::Wchs => "wchs",
            FourLetterWord::Mntr => "mntr",
            FourLetterWord::Isro => "isro",
            FourLetterWord::Hash => "hash",
            FourLetterWord::TelnetClose => "telnet close",
        }
    }
}

/// Given the first 4 bytes of a fresh connection (before any frame), the command they spell,
/// if any. ZooKeeper reads them as the first frame's length int and compares the int with
/// each command's bytes, so the match is exact and case-sensitive. Every command reads as a
/// length far above any sane `jute.maxbuffer`, so there is no ambiguity with a real frame.
pub fn four_letter_word(first: [u8; 4]) -> Option<FourLetterWord> {
    FourLetterWord::ALL.into_iter().find(|w| w.bytes() == first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_across_reads() {
        let mut c = FrameCodec::default();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], &[1, 2, 3]);
        // Empty frame, then an incomplete prefix.
        assert_eq!(c.decode(&mut buf).unwrap().unwrap().len(), 0);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.len(), 2);
    }

    #[test]
    fn rejects_negative_and_oversized_lengths() {
        let mut c = FrameCodec::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 17][..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(FrameError::BadLength { len: 17, max: 16 })
        ));
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(FrameError::BadLength { len: -1, .. })
        ));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 16][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        // Default max is exactly 0xfffff.
        let mut c = FrameCodec::default();
        let mut buf = BytesMut::from(&[0u8, 0x0f, 0xff, 0xff][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        let mut buf = BytesMut::from(&[0u8, 0x10, 0, 0][..]);
        assert!(c.decode(&mut buf).is_err());
    }

    #[test]
    fn encodes_prefix() {
        let mut c = FrameCodec::default();
        let mut out = BytesMut::new();
        c.encode(&b"ab"[..], &mut out).unwrap();
        c.encode(Bytes::from_static(b"c"), &mut out).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'c']);
    }

    #[test]
    fn detects_four_letter_words() {
        assert_eq!(four_letter_word(*b"ruok"), Some(FourLetterWord::Ruok));
        assert_eq!(four_letter_word(*b"srvr"), Some(FourLetterWord::Srvr));
        assert_eq!(four_letter_word(*b"hash"), Some(FourLetterWord::Hash));
        assert_eq!(
            four_letter_word([0xff, 0xf4, 0xff, 0xfd]),
            Some(FourLetterWord::TelnetClose)
        );
        assert_eq!(four_letter_word(*b"RUOK"), None);
        assert_eq!(four_letter_word([0, 0, 0, 44]), None);
        for w in FourLetterWord::ALL {
            assert_eq!(four_letter_word(w.bytes()), Some(w));
            // Each spells a length no frame can have.
            assert!(
                i32::from_be_bytes(w.bytes()) as i64 > DEFAULT_MAX_FRAME as i64
                    || i32::from_be_bytes(w.bytes()) < 0
            );
        }
        assert_eq!(FourLetterWord::ALL.len(), 19);
    }
}
