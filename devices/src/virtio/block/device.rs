use std::fs::{File, OpenOptions};
use std::path::Path;

use vmm_sys_util::eventfd::EventFd;

use super::request::{Buf, Disk, MAX_DESCS};
use super::{
    features as blk, BlockError, CHUNK, ID_BYTES, MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS,
    QUEUE_SIZE, SECTOR_SIZE, SEG_MAX, SIZE_MAX,
};
use crate::virtio::features::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::virtio::{ActivateError, Activated, VirtioDevice, VirtioState, TYPE_BLOCK};

/// Length of the config space we serve (through write_zeroes_may_unmap
/// and its padding, virtio 1.2 5.2.4).
const CONFIG_LEN: usize = 60;

/// The virtio block device.
pub struct Block {
    state: VirtioState,
    file: File,
    /// Bytes, a whole number of sectors: the image's size at start.
    capacity: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    config: [u8; CONFIG_LEN],
    /// The one copy buffer; requests larger than it go through in pieces.
    scratch: Vec<u8>,
    readable: Vec<Buf>,
    writable: Vec<Buf>,
    /// Requests served, and those answered with an error, for the dump.
    served: u64,
    failed: u64,
}

impl Block {
    /// A device on the image at `path`, locked for this process (exclusive,
    /// or shared when `read_only`): a second VMM on the same image fails
    /// here with [`BlockError::Locked`]. `id` (at most 20 bytes) is what
    /// GET_ID answers: the guest's `/sys/block/vdX/serial`.
    pub fn new(path: &Path, read_only: bool, id: &str) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        lock(&file, read_only)?;
        Self::with_file(file, read_only, id)
    }

    /// A device on an open image (not locked; for tests and fuzzing).
    pub fn with_file(file: File, read_only: bool, id: &str) -> Result<Self, BlockError> {
        if id.len() > ID_BYTES {
            return Err(BlockError::IdTooLong(id.to_string()));
        }
        let capacity = file.metadata().map_err(BlockError::Size)?.len();
        if capacity == 0
            || !capacity.is_multiple_of(SECTOR_SIZE)
            || i64::try_from(capacity).is_err()
        {
            return Err(BlockError::BadSize(capacity));
        }
        let mut features = (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << blk::SIZE_MAX)
            | (1 << blk::SEG_MAX)
            | (1 << blk::BLK_SIZE)
            | (1 << blk::FLUSH);
        features |= if read_only {
            1 << blk::RO
        } else {
            (1 << blk::DISCARD) | (1 << blk::WRITE_ZEROES)
        };
        let mut id_bytes = [0u8; ID_BYTES];
        id_bytes[..id.len()].copy_from_slice(id.as_bytes());
        Ok(Self {
            state: VirtioState::new(TYPE_BLOCK, "virtio-blk", features, &[QUEUE_SIZE])
                .map_err(BlockError::EventFd)?,
            file,
            capacity,
            read_only,
            id: id_bytes,
            config: config_space(capacity),
            scratch: vec![0; CHUNK],
            readable: Vec::with_capacity(MAX_DESCS),
            writable: Vec::with_capacity(MAX_DESCS),
            served: 0,
            failed: 0,
        })
    }

    /// The eventfd the guest's notifications arrive on.
    pub fn queue_event(&self) -> &EventFd {
        &self.state.queue_evts[0]
    }

    /// The volume's size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity / SECTOR_SIZE
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Serves every request in the queue (at most a queue's worth per
    /// call) and interrupts the guest if it asked. No-op before activation.
    pub fn process_queue(&mut self) {
        let Some(q) = self.state.serving(0) else {
            return;
        };
        let mem = q.mem;
        let mut disk = Disk {
            file: &self.file,
            capacity: self.capacity,
            read_only: self.read_only,
            id: &self.id,
            scratch: &mut self.scratch,
            readable: &mut self.readable,
            writable: &mut self.writable,
        };
        let (served, failed) = (&mut self.served, &mut self.failed);
        crate::virtio::serve::serve_queue(
            "virtio-blk",
            q.queue,
            mem,
            q.interrupt,
            q.evt,
            |chain| {
                let (len, ok) = disk.serve(mem, chain);
                *served += 1;
                *failed += u64::from(!ok);
                len
            },
        );
    }
}

/// A lock on the image without waiting (std's, flock(2)): another process
/// holding the image is an error.
fn lock(file: &File, shared: bool) -> Result<(), BlockError> {
    let taken = if shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match taken {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(BlockError::Locked),
        Err(std::fs::TryLockError::Error(e)) => Err(BlockError::Lock(e)),
    }
}

fn config_space(capacity: u64) -> [u8; CONFIG_LEN] {
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |at: usize, bytes: &[u8]| c[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &(capacity / SECTOR_SIZE).to_le_bytes());
    put(8, &SIZE_MAX.to_le_bytes());
    put(12, &SEG_MAX.to_le_bytes());
    put(20, &(SECTOR_SIZE as u32).to_le_bytes());
    put(34, &1u16.to_le_bytes()); // num_queues
    put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
    put(40, &MAX_DISCARD_SEGMENTS.to_le_bytes());
    // Discards in 4 KiB units: the host's page and block size.
    put(44, &(4096 / SECTOR_SIZE as u32).to_le_bytes());
    put(48, &MAX_DISCARD_SECTORS.to_le_bytes());
    put(52, &MAX_DISCARD_SEGMENTS.to_le_bytes());
    put(56, &[1]); // write_zeroes_may_unmap
    c
}

impl VirtioDevice for Block {
    virtio_state_accessors!(state);

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::virtio::read_config_from_slice(&self.config, offset, data);
    }

    fn activate(&mut self, active: Activated) -> Result<(), ActivateError> {
        // Requests queued before DRIVER_OK: look once now.
        self.state.activate(active, [0])
    }

    fn reset(&mut self) -> bool {
        self.state.reset();
        true
    }

    fn debug_state(&self) -> crate::virtio::debug::DeviceDebug {
        crate::virtio::debug::DeviceDebug {
            queues: self.state.queue_progress(),
            notes: vec![format!(
                "{} sectors{}, {} requests served, {} failed",
                self.capacity / SECTOR_SIZE,
                if self.read_only { ", read-only" } else { "" },
                self.served,
                self.failed
            )],
        }
    }
}
