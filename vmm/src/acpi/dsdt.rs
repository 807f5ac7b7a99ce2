//! The DSDT: the devices a kernel cannot discover by itself, in AML.
//! `\_S5_` gives the sleep type the kernel writes to power off;
//! COM1 and each virtio-mmio window with its IRQ line follow.

use acpi_tables::aml::{
    self, Device, EISAName, Interrupt, Memory32Fixed, Name, Package, ResourceTemplate, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;
use devices::legacy::{ACPI_S5_SLEEP_TYPE, COM1_IRQ, COM1_PORT_BASE, COM1_PORT_LEN};

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// One virtio-mmio transport: its register window and its IRQ line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    pub base: u64,
    pub len: u64,
    pub irq: u32,
}

/// The ACPI id Linux's virtio-mmio driver matches.
const VIRTIO_MMIO_HID: &str = "LNRO0005";

/// The DSDT bytes, header and checksum included.
pub fn build(virtio: &[VirtioMmioDevice]) -> Vec<u8> {
    let mut body = Vec::new();
    let s5_type = ACPI_S5_SLEEP_TYPE;
    // SLP_TYPa, SLP_TYPb, two reserved.
    Name::new(
        "_S5_".into(),
        &Package::new(vec![&s5_type, &s5_type, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut body);

    // Interrupt(consumer, edge, active high, exclusive): edge-triggered
    // like the pulses the VMM sends, as the MP table says too.
    let com1_io = IO::new(
        COM1_PORT_BASE as u16,
        COM1_PORT_BASE as u16,
        1,
        COM1_PORT_LEN as u8,
    );
    let com1_irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let com1_crs = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1_hid = EISAName::new("PNP0501");
    Device::new(
        "_SB_.COM1".into(),
        vec![
            &Name::new("_HID".into(), &com1_hid),
            &Name::new("_UID".into(), &0u8),
            &Name::new("_CRS".into(), &com1_crs),
        ],
    )
    .to_aml_bytes(&mut body);

    for (i, d) in virtio.iter().enumerate() {
        virtio_device(i, d).to_aml_bytes(&mut body);
    }

    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// `Device (_SB.Vnnn)` for one transport, as AML bytes.
fn virtio_device(index: usize, d: &VirtioMmioDevice) -> VirtioAml {
    VirtioAml {
        path: format!("_SB_.V{index:03X}"),
        uid: index as u32,
        dev: *d,
    }
}

struct VirtioAml {
    path: String,
    uid: u32,
    dev: VirtioMmioDevice,
}

impl Aml for VirtioAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        // The windows live in the 32-bit MMIO gap (layout.rs), so the
        // casts are exact.
        let window = Memory32Fixed::new(true, self.dev.base as u32, self.dev.len as u32);
        let irq = Interrupt::new(true, true, false, false, self.dev.irq);
        let crs = ResourceTemplate::new(vec![&window, &irq]);
        let hid: aml::AmlStr = VIRTIO_MMIO_HID;
        Device::new(
            self.path.as_str().into(),
            vec![
                &Name::new("_HID".into(), &hid),
                &Name::new("_UID".into(), &self.uid),
                &Name::new("_CRS".into(), &crs),
            ],
        )
        .to_aml_bytes(sink);
    }
}
