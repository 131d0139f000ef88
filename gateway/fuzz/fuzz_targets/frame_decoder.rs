//! Arbitrary bytes as they arrive on a client connection: the frame decoder (fed in chunks),
//! then the first frame as a ConnectRequest and every frame as a request. Nothing may panic,
//! and every frame must respect the configured maximum.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roster_gateway::zk::frame::{FrameCodec, four_letter_word};
use roster_gateway::zk::proto::{decode_connect_request, decode_request};
use tokio_util::codec::Decoder;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = four_letter_word([data[0], data[1], data[2], data[3]]);
    }
    // The first byte picks a chunk size so partial reads are exercised too.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut first = true;
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX);
                    if first {
                        let _ = decode_connect_request(&frame);
                        first = false;
                    }
                    let _ = decode_request(&frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
