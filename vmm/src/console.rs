//! The serial console's output, in lines: the guest writes its console a
//! byte per port exit, and a write(2) per byte (each waking whoever reads
//! the console) was a good part of what printing cost the guest. Bytes
//! gather until a newline (or [`MAX_PENDING`]) and go out in one write; a
//! partial line (a prompt) goes out [`FLUSH_AFTER`] later, from the event
//! loop's timer.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

/// How long a partial line waits for more output.
pub const FLUSH_AFTER: Duration = Duration::from_millis(5);
/// Bytes gathered before they go out without a newline.
pub const MAX_PENDING: usize = 4096;

struct Pending {
    buf: Vec<u8>,
    out: Box<dyn Write + Send>,
    timer: TimerFd,
    armed: bool,
}

impl Pending {
    fn flush_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // A failing console (closed pipe, full disk) must not stop the
        // guest: its output is dropped.
        if let Err(e) = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush())
        {
            tracing::trace!("console: write failed: {e}");
        }
        self.buf.clear();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.flush_out();
    }
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// The serial device's end: gathers bytes into lines.
pub struct LineWriter {
    pending: Arc<Mutex<Pending>>,
}

/// The event loop's end: sends a partial line out when its timer fires
/// (or when asked: a paused VM's console shows all the guest printed).
#[derive(Clone)]
pub struct Flusher {
    pending: Arc<Mutex<Pending>>,
    timer_fd: RawFd,
}

/// Puts `out` behind a line buffer; register the [`Flusher`] with the
/// event loop, or partial lines wait for the next newline.
pub fn line_buffered(out: Box<dyn Write + Send>) -> std::io::Result<(LineWriter, Flusher)> {
    let timer = TimerFd::new()?;
    let timer_fd = timer.as_raw_fd();
    let pending = Arc::new(Mutex::new(Pending {
        buf: Vec::new(),
        out,
        timer,
        armed: false,
    }));
    Ok((
        LineWriter {
            pending: pending.clone(),
        },
        Flusher { pending, timer_fd },
    ))
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut p = lock(&self.pending);
        p.buf.extend_from_slice(data);
        if data.contains(&b'\n') || p.buf.len() >= MAX_PENDING {
            p.flush_out();
        } else if !p.armed {
            // The flag stays set until the flusher ran, so the timer is
            // never re-armed between its expiry and the flush.
            if let Err(e) = p.timer.reset(FLUSH_AFTER, None) {
                tracing::trace!("console: cannot arm the flush timer: {e}");
                p.flush_out();
            } else {
                p.armed = true;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // vm-superio flushes after every byte; a line goes out at its end.
        Ok(())
    }
}

impl Flusher {
    /// Sends out what is gathered now.
    pub fn flush_now(&self) {
        lock(&self.pending).flush_out();
    }
}

impl MutEventSubscriber for Flusher {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new_raw(self.timer_fd, EventSet::IN)) {
            tracing::error!("cannot watch the console's flush timer: {e}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let mut p = lock(&self.pending);
        if p.armed {
            // Expired (that is why epoll woke us): the read does not block.
            let _ = p.timer.wait();
            p.armed = false;
        }
        p.flush_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose writes a test can see.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Shared {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_go_out_whole_and_a_prompt_after_the_timer() {
        let seen = Shared::default();
        let (mut w, flusher) = line_buffered(Box::new(seen.clone())).unwrap();
        for b in b"hello\n# " {
            w.write_all(&[*b]).unwrap();
            w.flush().unwrap();
        }
        assert_eq!(*seen.0.lock().unwrap(), vec![b"hello\n".to_vec()]);
        // The prompt waits for the timer, which the event loop serves.
        let mut em =
            event_manager::EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
                .unwrap();
        event_manager::SubscriberOps::add_subscriber(&mut em, Arc::new(Mutex::new(flusher)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.0.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
            em.run_with_timeout(100).unwrap();
        }
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![b"hello\n".to_vec(), b"# ".to_vec()]
        );
    }

    #[test]
    fn a_long_run_without_newline_goes_out_at_the_cap_and_the_rest_at_drop() {
        let seen = Shared::default();
        let (mut w, flusher) = line_buffered(Box::new(seen.clone())).unwrap();
        w.write_all(&vec![b'x'; MAX_PENDING + 10]).unwrap();
        assert_eq!(seen.0.lock().unwrap().len(), 1);
        w.write_all(b"tail").unwrap();
        drop(w);
        drop(flusher);
        let all = seen.0.lock().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1], b"tail".to_vec());
    }
}
