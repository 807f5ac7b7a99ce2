//! Interface configuration through the classic ioctls (SIOCSIFADDR,
//! SIOCSIFNETMASK, SIOCSIFFLAGS, SIOCADDRT): all a single IPv4 interface
//! needs, without a netlink dependency.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::sys::cvt;

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket succeeded; we own the descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain data (a name and a union of plain data).
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and
    // sockaddr is the generic view of any socket address.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(sock: &OwnedFd, req: libc::Ioctl, r: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request used here reads or writes one ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), req, r as *mut libc::ifreq) })?;
    Ok(())
}

/// Sets IFF_UP (loopback gets 127.0.0.1/8 from the kernel when it goes up).
pub fn set_up(name: &str) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut r = ifreq(name)?;
    ioctl(&s, libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(&s, libc::SIOCSIFFLAGS, &mut r)
}

pub fn netmask(prefix: u8) -> Ipv4Addr {
    match prefix {
        0 => Ipv4Addr::UNSPECIFIED,
        p => Ipv4Addr::from(u32::MAX << (32 - u32::from(p.min(32)))),
    }
}

/// Sets the interface's (primary) IPv4 address and prefix.
pub fn set_addr(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(&s, libc::SIOCSIFADDR, &mut r)?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_netmask = sockaddr_in(netmask(prefix));
    ioctl(&s, libc::SIOCSIFNETMASK, &mut r)
}

pub fn get_addr(name: &str) -> io::Result<Ipv4Addr> {
    let s = ctl_socket()?;
    let mut r = ifreq(name)?;
    ioctl(&s, libc::SIOCGIFADDR, &mut r)?;
    // SAFETY: SIOCGIFADDR filled ifru_addr with an AF_INET address, whose
    // layout is sockaddr_in.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute(r.ifr_ifru.ifru_addr) };
    Ok(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

pub fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    ioctl(&s, libc::SIOCSIFMTU, &mut r)
}

pub fn mac_address(name: &str) -> io::Result<[u8; 6]> {
    let s = ctl_socket()?;
    let mut r = ifreq(name)?;
    ioctl(&s, libc::SIOCGIFHWADDR, &mut r)?;
    // SAFETY: SIOCGIFHWADDR filled ifru_hwaddr.
    let data = unsafe { r.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

fn route(dst: Ipv4Addr, mask: Ipv4Addr, gw: Option<Ipv4Addr>, dev: &CString) -> io::Result<()> {
    let s = ctl_socket()?;
    // SAFETY: rtentry is plain data; zero is the "unset" value of each
    // field.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(dst);
    rt.rt_genmask = sockaddr_in(mask);
    rt.rt_flags = libc::RTF_UP;
    if let Some(gw) = gw {
        rt.rt_gateway = sockaddr_in(gw);
        rt.rt_flags |= libc::RTF_GATEWAY;
    } else {
        rt.rt_flags |= libc::RTF_HOST;
    }
    // The kernel only reads the name through this pointer.
    rt.rt_dev = dev.as_ptr().cast_mut();
    // SAFETY: SIOCADDRT reads one rtentry; rt_dev points to a live C string.
    match cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCADDRT, &rt as *const libc::rtentry) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Default route via `gw` on `dev`. A gateway outside the interface's
/// subnet (e.g. a /32 address) first gets a host route on the link.
pub fn add_default_route(dev: &str, gw: Ipv4Addr) -> io::Result<()> {
    let cdev = crate::sys::cstring(dev)?;
    let any = Ipv4Addr::UNSPECIFIED;
    match route(any, any, Some(gw), &cdev) {
        Err(e) if e.raw_os_error() == Some(libc::ENETUNREACH) => {
            route(gw, Ipv4Addr::BROADCAST, None, &cdev)?;
            route(any, any, Some(gw), &cdev)
        }
        r => r,
    }
}

/// The first non-loopback interface, waiting up to `wait` for one to
/// appear (virtio-net probes before init runs, so normally no wait).
pub fn find_iface(wanted: Option<&str>, wait: Duration) -> Result<String, String> {
    let deadline = Instant::now() + wait;
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let found = match wanted {
            Some(w) => names.iter().find(|n| *n == w).cloned(),
            None => names.into_iter().find(|n| n != "lo"),
        };
        if let Some(n) = found {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            return Err(match wanted {
                Some(w) => format!("network interface '{w}' not found"),
                None => {
                    "no network interface besides lo (is virtio-net on the command line?)".into()
                }
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes resolv.conf. A symlink there (systemd-resolved's stub, pointing
/// into a /run that is ours now) is replaced by a file.
pub fn write_resolv_conf(path: &Path, dns: &[Ipv4Addr], search: Option<&str>) -> io::Result<()> {
    let mut text = String::from("# written by mvm-init\n");
    if let Some(s) = search {
        text.push_str(&format!("search {s}\n"));
    }
    for d in dns {
        text.push_str(&format!("nameserver {d}\n"));
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(path)?;
    }
    match std::fs::write(path, &text) {
        Ok(()) => Ok(()),
        Err(_) => {
            let _ = std::fs::remove_file(path);
            std::fs::write(path, &text)
        }
    }
}

pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: name is valid for name.len() bytes.
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })?;
    Ok(())
}

/// Static configuration: address, link up, default route.
pub fn configure_static(
    iface: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), String> {
    set_up(iface).map_err(|e| format!("{iface}: bringing up: {e}"))?;
    set_addr(iface, addr, prefix).map_err(|e| format!("{iface}: setting {addr}/{prefix}: {e}"))?;
    if let Some(gw) = gateway {
        add_default_route(iface, gw)
            .map_err(|e| format!("{iface}: default route via {gw}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(31), Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn resolv_conf_replaces_a_symlink() {
        let d = crate::testutil::TempDir::new("resolv");
        let target = d.path().join("stub");
        std::fs::write(&target, "old").unwrap();
        let link = d.path().join("resolv.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_resolv_conf(&link, &[Ipv4Addr::new(10, 0, 2, 3)], Some("mvm.internal")).unwrap();
        let text = std::fs::read_to_string(&link).unwrap();
        assert!(text.contains("nameserver 10.0.2.3\n") && text.contains("search mvm.internal\n"));
        assert!(!std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
    }

    /// Exercises the ioctls for real in a private network namespace (of
    /// this thread only), when the test runs as root.
    #[test]
    fn ioctls_in_a_private_netns() {
        let r = std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("skipped: cannot unshare the network namespace (not root?)");
                return;
            }
            set_up("lo").unwrap();
            assert_eq!(get_addr("lo").unwrap(), Ipv4Addr::LOCALHOST);
            set_addr("lo", Ipv4Addr::new(127, 0, 0, 2), 8).unwrap();
            assert_eq!(get_addr("lo").unwrap(), Ipv4Addr::new(127, 0, 0, 2));
            assert_eq!(mac_address("lo").unwrap(), [0; 6]);
            // lo in a fresh namespace: a connection to ourselves works.
            let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
            std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let err = set_up("nosuchif0").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
        });
        r.join().unwrap();
    }
}
