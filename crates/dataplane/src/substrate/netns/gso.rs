//! The GSO size of a device, set over rtnetlink: iproute2 6.1 (Debian 12) cannot set the
//! IPv4 limits (`gso_ipv4_max_size`, Linux 6.3), and one `RTM_NEWLINK` carrying four
//! 32-bit attributes does not warrant a netlink crate.

use std::io;
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// `include/uapi/linux/if_link.h`: the limits for any protocol, then those for IPv4.
const IFLA_GSO_MAX_SIZE: u16 = 41;
const IFLA_GRO_MAX_SIZE: u16 = 58;
const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;

/// The largest packet the kernel aggregates (`GSO_MAX_SIZE`), for BIG TCP.
pub(super) const BIG: u32 = 524_280;

/// The header of a netlink message and the `ifinfomsg` after it.
const HEADER: usize = 16 + 16;

/// Lets device `dev` of the calling thread's namespace send and aggregate packets of up
/// to `size` bytes, on every protocol. Fails on kernels without BIG TCP (before 6.3,
/// `size` above 64 KB is refused) and for a device that is not there.
pub(super) fn set_max(dev: &str, size: u32) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex(dev)
        .map_err(|e| io::Error::other(format!("device {dev}: {e}")))?;
    let attrs = [
        IFLA_GSO_MAX_SIZE,
        IFLA_GRO_MAX_SIZE,
        IFLA_GSO_IPV4_MAX_SIZE,
        IFLA_GRO_IPV4_MAX_SIZE,
    ];
    let len = HEADER + attrs.len() * 8;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, pad, type
    msg.extend_from_slice(&(index as i32).to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // change mask
    for kind in attrs {
        msg.extend_from_slice(&8u16.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&size.to_ne_bytes());
    }
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    sendto(
        fd.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    // The answer is an NLMSG_ERROR whose code is 0 for success or a negative errno.
    let mut answer = [0u8; 1024];
    let n = recv(fd.as_raw_fd(), &mut answer, MsgFlags::empty())?;
    let kind = (n >= 20).then(|| u16::from_ne_bytes([answer[4], answer[5]]));
    if kind != Some(libc::NLMSG_ERROR as u16) {
        return Err(io::Error::other(format!(
            "device {dev}: unexpected netlink answer (type {kind:?}, {n} bytes)"
        )));
    }
    let code = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
    match code {
        0 => Ok(()),
        e => Err(io::Error::other(format!(
            "device {dev}: GSO size {size}: {}",
            io::Error::from_raw_os_error(-e)
        ))),
    }
}
