//! Frame decoding from hostile bytes: the blocking reader and the
//! incremental decoder must agree, never panic, and never allocate more
//! than one maximum frame; decoded messages must re-encode and decode to
//! themselves.
#![no_main]

use std::io::Cursor;

use agent_proto::{
    encode_frame, read_frame_bytes, FrameDecoder, FrameError, GuestMsg, HostMsg, MAX_FRAME_SIZE,
};
use libfuzzer_sys::fuzz_target;

fn check<T>(payload: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(m) = serde_json::from_slice::<T>(payload) {
        let frame = encode_frame(&m).expect("a decoded message re-encodes");
        let again: T = serde_json::from_slice(&frame[4..]).expect("re-encoded message decodes");
        assert_eq!(again, m);
    }
}

fuzz_target!(|data: &[u8]| {
    // Blocking reader: frames until the stream ends or breaks.
    let mut r = Cursor::new(data);
    let mut blocking = Vec::new();
    loop {
        match read_frame_bytes(&mut r) {
            Ok(p) => {
                assert!(p.len() <= MAX_FRAME_SIZE);
                blocking.push(p);
            }
            Err(FrameError::Closed) => break,
            Err(FrameError::Truncated { .. }) | Err(FrameError::TooLarge { .. }) => break,
            Err(e) => panic!("unexpected error from a byte slice: {e}"),
        }
    }

    // Incremental decoder, fed in uneven chunks derived from the input.
    let mut d = FrameDecoder::new();
    let mut incremental = Vec::new();
    let step = 1 + data.first().copied().unwrap_or(0) as usize % 97;
    let mut broken = false;
    'outer: for chunk in data.chunks(step) {
        d.push(chunk);
        loop {
            match d.next_payload() {
                Ok(Some(p)) => incremental.push(p.to_vec()),
                Ok(None) => break,
                Err(_) => {
                    broken = true;
                    break 'outer;
                }
            }
        }
        assert!(d.buffered() <= MAX_FRAME_SIZE + 4 + step);
    }
    if !broken {
        let _ = d.finish();
    }
    assert_eq!(blocking, incremental);

    for p in &blocking {
        check::<HostMsg>(p);
        check::<GuestMsg>(p);
    }
});
