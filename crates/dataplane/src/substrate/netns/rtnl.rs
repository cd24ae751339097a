//! The few rtnetlink requests the substrate sends itself, from a thread inside the
//! namespace: a device's GSO size (iproute2 6.1, Debian 12's, cannot set the IPv4 limits
//! `gso_ipv4_max_size`, Linux 6.3) and the userspace path's local /32 routes (one
//! request instead of an `ip` process each: an endpoint's start and a node's start with
//! thousands of them cost what the kernel does, not process spawns). A handful of fixed
//! messages does not warrant a netlink crate.
//!
//! The userspace path's endpoint and SNAT addresses are `local` routes in the local
//! table (what `ip route add local ADDR/32 dev DEV table local` makes), not interface
//! addresses: sockets bind to them, the bridge answers ARP for them, and adding one costs
//! the same with 10,000 there (an interface address costs what the device already has:
//! the kernel walks the device's addresses and its routes' next hops on every add, 0.67 ms
//! each at 10,000 on one bridge against 0.01 ms for a route, `ip -batch` of 1,000).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use nix::libc;

use crate::kernel;
use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// `include/uapi/linux/if_link.h`: the limits for any protocol, then those for IPv4.
const IFLA_GSO_MAX_SIZE: u16 = 41;
const IFLA_GRO_MAX_SIZE: u16 = 58;
const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;
/// `include/uapi/linux/rtnetlink.h`.
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RT_TABLE_LOCAL: u8 = 255;
const RT_SCOPE_HOST: u8 = 254;
const RTN_LOCAL: u8 = 2;

/// The largest packet the kernel aggregates (`GSO_MAX_SIZE`), for BIG TCP.
pub(super) const BIG: u32 = 524_280;

fn index_of(dev: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(dev).map_err(|e| io::Error::other(format!("device {dev}: {e}")))
}

/// Sends one request (`header`: the message's fixed part after the netlink header,
/// then `attrs`) and returns the kernel's answer: 0, or a negative errno.
fn request(kind: u16, flags: i32, header: &[u8], attrs: &[(u16, &[u8])]) -> io::Result<i32> {
    let attrs_len: usize = attrs.iter().map(|(_, v)| (4 + v.len() + 3) & !3).sum();
    let len = 16 + header.len() + attrs_len;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    msg.extend_from_slice(header);
    for (kind, value) in attrs {
        msg.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(value);
        msg.resize((msg.len() + 3) & !3, 0);
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
    let answered = (n >= 20).then(|| u16::from_ne_bytes([answer[4], answer[5]]));
    if answered != Some(libc::NLMSG_ERROR as u16) {
        return Err(io::Error::other(format!(
            "unexpected netlink answer (type {answered:?}, {n} bytes)"
        )));
    }
    Ok(i32::from_ne_bytes([
        answer[16], answer[17], answer[18], answer[19],
    ]))
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(-code)
}

/// Lets device `dev` of the calling thread's namespace send and aggregate packets of up
/// to `size` bytes, on every protocol. Fails on kernels without BIG TCP (before 6.3,
/// `size` above 64 KB is refused) and for a device that is not there.
pub(super) fn set_gso_max(dev: &str, size: u32) -> io::Result<()> {
    let index = index_of(dev)?;
    // ifinfomsg: family, pad, type, index, flags, change mask.
    let mut header = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    header.extend_from_slice(&(index as i32).to_ne_bytes());
    header.extend_from_slice(&[0; 8]);
    let size = size.to_ne_bytes();
    let attrs = [
        IFLA_GSO_MAX_SIZE,
        IFLA_GRO_MAX_SIZE,
        IFLA_GSO_IPV4_MAX_SIZE,
        IFLA_GRO_IPV4_MAX_SIZE,
    ]
    .map(|kind| (kind, &size[..]));
    match request(libc::RTM_NEWLINK, 0, &header, &attrs)? {
        0 => Ok(()),
        e => Err(io::Error::other(format!(
            "device {dev}: GSO size {}: {}",
            u32::from_ne_bytes(size),
            errno(e)
        ))),
    }
}

/// Makes `addr`/32 a local address on device `dev` of the calling thread's namespace
/// (`add`: a `local` route of ours in the local table), or no longer one; what already
/// is so counts as done.
pub(super) fn local_route(add: bool, dev: &str, addr: Ipv4Addr) -> io::Result<()> {
    let index = index_of(dev)?;
    // rtmsg: family, destination and source prefix lengths, TOS, table, protocol,
    // scope, type, flags.
    let mut header = vec![
        libc::AF_INET as u8,
        32,
        0,
        0,
        RT_TABLE_LOCAL,
        kernel::LOCAL_PROTO,
        RT_SCOPE_HOST,
        RTN_LOCAL,
    ];
    header.extend_from_slice(&0u32.to_ne_bytes());
    let octets = addr.octets();
    let index = index.to_ne_bytes();
    let attrs = [(RTA_DST, &octets[..]), (RTA_OIF, &index[..])];
    let (kind, flags) = if add {
        (libc::RTM_NEWROUTE, libc::NLM_F_CREATE | libc::NLM_F_REPLACE)
    } else {
        (libc::RTM_DELROUTE, 0)
    };
    match request(kind, flags, &header, &attrs)? {
        0 => Ok(()),
        e if !add && [libc::ESRCH, libc::ENOENT, libc::ENODEV].contains(&-e) => Ok(()),
        e => Err(io::Error::other(format!(
            "{} local route {addr}/32 on {dev}: {}",
            if add { "adding" } else { "removing" },
            errno(e)
        ))),
    }
}
