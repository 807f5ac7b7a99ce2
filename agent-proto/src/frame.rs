//! Length-delimited frames: a `u32` big-endian payload length, then that many
//! bytes of JSON.
//!
//! The length is checked against [`MAX_FRAME_SIZE`] before anything is
//! allocated, so a peer cannot make the other side allocate without bound.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest payload either side accepts or sends (1 MiB).
pub const MAX_FRAME_SIZE: usize = 1 << 20;

/// Size of the length prefix.
pub const HEADER_SIZE: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream cleanly between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    /// The length prefix exceeds [`MAX_FRAME_SIZE`] (or a message to send
    /// would).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// True when the byte stream itself can no longer be trusted (as opposed
    /// to one well-framed payload that did not parse).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::Json(_))
    }
}

/// Serializes `msg` into a complete frame (header included).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; HEADER_SIZE];
    serde_json::to_writer(&mut buf, msg)?;
    let len = buf.len() - HEADER_SIZE;
    if len > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_SIZE,
        });
    }
    // len <= MAX_FRAME_SIZE < u32::MAX, so the cast is lossless.
    buf[..HEADER_SIZE].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Writes one frame and flushes, so a buffered writer never holds back a
/// message the peer is waiting for.
pub fn write_frame<W: Write + ?Sized, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let buf = encode_frame(msg)?;
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads into `buf` until it is full or the stream ends; returns the count.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one frame's payload. Reads exactly the frame and nothing beyond it,
/// so the stream can be handed to other code afterwards.
pub fn read_frame_bytes<R: Read + ?Sized>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_SIZE];
    match read_full(r, &mut header)? {
        0 => return Err(FrameError::Closed),
        HEADER_SIZE => {}
        got => {
            return Err(FrameError::Truncated {
                got,
                want: HEADER_SIZE,
            })
        }
    }
    let len = check_len(header)?;
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got != len {
        return Err(FrameError::Truncated {
            got: HEADER_SIZE + got,
            want: HEADER_SIZE + len,
        });
    }
    Ok(payload)
}

/// Reads and decodes one frame.
pub fn read_frame<R: Read + ?Sized, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let payload = read_frame_bytes(r)?;
    Ok(serde_json::from_slice(&payload)?)
}

fn check_len(header: [u8; HEADER_SIZE]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_SIZE {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_SIZE,
        });
    }
    Ok(len)
}

/// Incremental decoder for non-blocking readers: push whatever bytes
/// arrived, then pull complete frames.
///
/// It holds at most one partial frame plus what was pushed since the last
/// pull; callers that pull until `None` before pushing again keep it below
/// `MAX_FRAME_SIZE + HEADER_SIZE + chunk`.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf` (compacted lazily).
    pos: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > MAX_FRAME_SIZE {
            // Compact rarely: moving bytes per frame would make large
            // streams quadratic.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete payload, `None` if more bytes are needed. An
    /// oversize length is reported as soon as its header is in.
    pub fn next_payload(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.pos..];
        let Some(header) = avail.get(..HEADER_SIZE) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_SIZE];
        h.copy_from_slice(header);
        let len = check_len(h)?;
        if avail.len() < HEADER_SIZE + len {
            return Ok(None);
        }
        let start = self.pos + HEADER_SIZE;
        self.pos = start + len;
        Ok(Some(&self.buf[start..start + len]))
    }

    /// The next complete frame decoded as `T`. A payload that fails to parse
    /// is consumed (the framing is intact), so the caller may go on.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_payload()? {
            None => Ok(None),
            Some(p) => Ok(Some(serde_json::from_slice(p)?)),
        }
    }

    /// Called when the stream ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            got => {
                let want = match self.buf.get(self.pos..self.pos + HEADER_SIZE) {
                    Some(h) => HEADER_SIZE + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize,
                    None => HEADER_SIZE,
                };
                Err(FrameError::Truncated { got, want })
            }
        }
    }
}
