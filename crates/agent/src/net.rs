//! Guest networking for QEMU user-mode networking: the addresses are fixed
//! by QEMU (guest 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3), so there is
//! no DHCP client: a few ioctls set them, before anything else runs.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);

/// `struct ifreq` with the address member of its union (40 bytes on Linux).
#[repr(C)]
struct IfReqAddr {
    name: [u8; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn ifname(name: &str) -> io::Result<[u8; libc::IFNAMSIZ]> {
    let mut out = [0u8; libc::IFNAMSIZ];
    if name.len() >= out.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory arguments; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, properly sized ifreq/rtentry for `request`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_addr(sock: &OwnedFd, name: &str, request: libc::c_ulong, ip: Ipv4Addr) -> io::Result<()> {
    let mut req = IfReqAddr {
        name: ifname(name)?,
        addr: sockaddr(ip),
        _pad: [0; 8],
    };
    ioctl(sock, request, &mut req)
}

fn set_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let mut req = IfReqFlags {
        name: ifname(name)?,
        flags: 0,
        _pad: [0; 22],
    };
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req)?;
    req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
}

fn add_default_route(sock: &OwnedFd, gateway: Ipv4Addr) -> io::Result<()> {
    let as_sockaddr = |ip: Ipv4Addr| {
        let sin = sockaddr(ip);
        // SAFETY: sockaddr_in and sockaddr have the same size; this is the
        // documented way to pass an IPv4 address in an rtentry.
        unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
    };
    // SAFETY: rtentry is plain data; all-zero is its valid empty value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = as_sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = as_sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = as_sockaddr(gateway);
    rt.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
    match ioctl(sock, libc::SIOCADDRT, &mut rt) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// The first interface that is not loopback, waiting for its driver.
fn first_nic(timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = std::fs::read_dir("/sys/class/net").ok().and_then(|d| {
            let mut names: Vec<String> = d
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n != "lo")
                .collect();
            names.sort();
            names.into_iter().next()
        });
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Loopback up; the NIC (if any) with QEMU user-net's fixed addresses.
pub fn configure_user_net() -> io::Result<()> {
    let sock = control_socket()?;
    set_up(&sock, "lo")?;
    let Some(nic) = first_nic(Duration::from_secs(5)) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no network interface",
        ));
    };
    set_addr(&sock, &nic, libc::SIOCSIFADDR, GUEST_ADDR)?;
    set_addr(&sock, &nic, libc::SIOCSIFNETMASK, NETMASK)?;
    set_up(&sock, &nic)?;
    add_default_route(&sock, GATEWAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<IfReqAddr>(), 40);
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert!(ifname("eth0").is_ok());
        assert!(ifname("a-very-long-interface-name").is_err());
    }
}
